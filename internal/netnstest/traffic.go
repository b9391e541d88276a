package netnstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Server accepts connections in the server namespace; on each it reads
// exactly Request bytes, writes Response bytes, then waits for the client
// to close before closing its end.
type Server struct {
	Addr     netip.AddrPort
	Request  int
	Response int
	l        net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	errs     []error
	served   atomic.Int64
}

// StartServer listens on the pair's server address and the given port.
func StartServer(tb testing.TB, p *Pair, port uint16, request, response int) *Server {
	tb.Helper()
	s := &Server{Addr: netip.AddrPortFrom(p.ServerIP, port), Request: request, Response: response}
	l, err := p.Server.Listen(s.Addr.String())
	if err != nil {
		tb.Fatalf("listen %s: %v", s.Addr, err)
	}
	s.l = l
	s.wg.Add(1)
	go s.serve()
	tb.Cleanup(func() {
		_ = l.Close()
		s.wg.Wait()
		for _, err := range s.errs {
			tb.Errorf("server: %v", err)
		}
	})
	return s
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.handle(c); err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, err)
				s.mu.Unlock()
			}
			s.served.Add(1)
		}()
	}
}

func (s *Server) handle(c net.Conn) error {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := Answer(c, s.Request, s.Response); err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != 0 {
		return fmt.Errorf("wait for client close: %d extra bytes, %v", n, err)
	}
	return nil
}

// WaitServed waits until the server has closed n connections: their
// close records are produced by then.
func (s *Server) WaitServed(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.served.Load() < int64(n) {
		if time.Now().After(deadline) {
			tb.Fatalf("server closed %d of %d connections", s.served.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The server's socket leaves LAST_ACK when the client's last ACK lands.
	time.Sleep(20 * time.Millisecond)
}

// Exchange dials the server from the client namespace, sends the request,
// reads the response and closes. It returns the client's local port.
func (s *Server) Exchange(ctx context.Context, p *Pair) (uint16, error) {
	c, err := p.Client.Dial(ctx, s.Addr.String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := Ask(c, s.Request, s.Response); err != nil {
		return 0, err
	}
	return uint16(c.LocalAddr().(*net.TCPAddr).Port), nil
}

// Answer is the server's side of one exchange: it reads exactly request
// bytes, then writes response bytes.
func Answer(c net.Conn, request, response int) error {
	if _, err := io.CopyN(io.Discard, c, int64(request)); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if _, err := c.Write(make([]byte, response)); err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	return nil
}

// Ask is the client's side of one exchange: it writes request bytes, then
// reads exactly response bytes.
func Ask(c net.Conn, request, response int) error {
	if _, err := c.Write(make([]byte, request)); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	if _, err := io.CopyN(io.Discard, c, int64(response)); err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	return nil
}

// Refused connects to a port with no listener and returns the client port
// the kernel used is unknown to Go, so it returns the error only.
func Refused(ctx context.Context, p *Pair, port uint16) error {
	c, err := p.Client.Dial(ctx, net.JoinHostPort(p.ServerIP.String(), strconv.Itoa(int(port))))
	if err == nil {
		c.Close()
		return errors.New("connect to a closed port succeeded")
	}
	return nil
}

// TimedOut connects to the pair's black hole after lowering the client
// namespace's SYN retries to one, so the kernel gives up in about 3s.
func TimedOut(tb testing.TB, p *Pair, port uint16) error {
	tb.Helper()
	p.Client.Exec(tb, "sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := p.Client.Dial(ctx, net.JoinHostPort(p.BlackHole.String(), strconv.Itoa(int(port))))
	if err == nil {
		c.Close()
		return errors.New("connect to the black hole succeeded")
	}
	return nil
}
