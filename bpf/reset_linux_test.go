package bpf

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestCloseCauses: each end of a connection says how it ended. A server
// closing with unread data and a client closing with SO_LINGER 0 reset
// the connection: the end that sent the RST says reset_sent (the kernel
// moves the socket to CLOSE before it sends the RST: the probe predicts
// it, also from FIN_WAIT2), the other reset_received. FINs both ways are normal on both ends;
// retransmissions exhausted are timed_out; a connect to a closed port is
// a failure, refused; tcp_abort (ss -K), whose RST the kernel sends while
// the socket is still open, is reset_sent through tcp_send_reset in tp_btf
// mode (raw_tp has no sk_storage: normal there).
func TestCloseCauses(t *testing.T) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		t.Run(string(mode), func(t *testing.T) { testCloseCauses(t, mode) })
	}
}

func testCloseCauses(t *testing.T, mode AttachMode) {
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: mode})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP })
	l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, 9100).String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() (net.Conn, net.Conn, uint16) {
		t.Helper()
		c, err := pair.Client.Dial(t.Context(), l.Addr().String())
		require.NoError(t, err)
		s := <-accepted
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		_ = s.SetDeadline(time.Now().Add(20 * time.Second))
		return c, s, uint16(c.LocalAddr().(*net.TCPAddr).Port)
	}
	type want struct {
		port           uint16
		client, server CloseCause
		what           string
	}
	var wants []want

	// Normal: FINs both ways.
	c, s, port := dial()
	_, err = c.Write(make([]byte, 10))
	require.NoError(t, err)
	require.NoError(t, c.Close())
	n, err := io.Copy(io.Discard, s)
	require.NoError(t, err)
	require.Equal(t, int64(10), n)
	require.NoError(t, s.Close())
	wants = append(wants, want{port, CauseNormal, CauseNormal, "FINs both ways"})

	// The server closes with 99 bytes unread: it sends the RST.
	c, s, port = dial()
	_, err = c.Write(make([]byte, 100))
	require.NoError(t, err)
	_, err = io.ReadFull(s, make([]byte, 1))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return tcpInq(t, s) == 99 }, 5*time.Second, time.Millisecond, "the rest arrived unread")
	require.NoError(t, s.Close())
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.NoError(t, c.Close())
	wants = append(wants, want{port, CauseResetReceived, CauseResetSent, "server closed with unread data"})

	// The client closes with SO_LINGER 0: it sends the RST.
	c, s, port = dial()
	_, err = c.Write(make([]byte, 10))
	require.NoError(t, err)
	_, err = io.ReadFull(s, make([]byte, 10))
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).SetLinger(0))
	require.NoError(t, c.Close())
	_, err = s.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.NoError(t, s.Close())
	wants = append(wants, want{port, CauseResetSent, CauseResetReceived, "client closed with SO_LINGER 0"})

	// SO_LINGER 0 after shutdown(SHUT_WR), in FIN_WAIT2: a RST too.
	c, s, port = dial()
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	_, err = s.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the client's FIN")
	require.Eventually(t, func() bool {
		info, err := tcpInfo(c)
		return err == nil && info.State == uint8(StateFinWait2)
	}, 5*time.Second, time.Millisecond, "the client in FIN_WAIT2")
	require.NoError(t, c.(*net.TCPConn).SetLinger(0))
	require.NoError(t, c.Close())
	_, err = s.Write(make([]byte, 1)) // CLOSE_WAIT: the RST makes it EPIPE
	for i := 0; err == nil && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
		_, err = s.Write(make([]byte, 1))
	}
	require.Error(t, err)
	require.NoError(t, s.Close())
	wants = append(wants, want{port, CauseResetSent, CauseResetReceived, "client closed with SO_LINGER 0 in FIN_WAIT2"})

	// tcp_abort on the client (ss -K): the kernel sends the RST first.
	c, s, port = dial()
	out, err := exec.Command("ip", "netns", "exec", pair.Client.Name, "ss", "-K", "-t",
		"dport", "=", ":9100", "sport", "=", ":"+itoa(port)).CombinedOutput()
	require.NoError(t, err, "ss -K: %s", out)
	_, err = s.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET)
	require.NoError(t, s.Close())
	require.NoError(t, c.Close())
	abort := CauseResetSent
	if mode == AttachRawTP {
		abort = CauseNormal
	}
	wants = append(wants, want{port, abort, CauseResetReceived, "ss -K on the client"})

	// Retransmissions exhausted: the client's segments stop arriving.
	pair.Client.Exec(t, "sysctl", "-q", "-w", "net.ipv4.tcp_retries2=1")
	c, s, port = dial()
	iptables(t, pair.Server, "-A", "INPUT", "-p", "tcp", "--sport", itoa(port), "-j", "DROP")
	_, err = c.Write(make([]byte, 10))
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ETIMEDOUT)
	require.NoError(t, c.Close())
	t.Cleanup(func() { s.Close() })
	wants = append(wants, want{port, CauseTimedOut, CauseNone, "retransmissions exhausted"})

	// A connect to a closed port: a failure, which keeps its error type.
	require.NoError(t, netnstest.Refused(t.Context(), pair, 9101))

	closeOf := func(rs []Record, local netip.Addr, match func(*Record) bool) *Record {
		for i := range rs {
			if rs[i].Kind == KindClose && rs[i].LocalAddr == local && match(&rs[i]) {
				return &rs[i]
			}
		}
		return nil
	}
	recs := col.waitFor(t, "every close record and the failure", func(rs []Record) bool {
		for _, w := range wants {
			if closeOf(rs, pair.ClientIP, func(r *Record) bool { return r.LocalPort == w.port }) == nil {
				return false
			}
			if w.server != CauseNone && closeOf(rs, pair.ServerIP, func(r *Record) bool { return r.PeerPort == w.port }) == nil {
				return false
			}
		}
		for _, r := range rs {
			if r.Kind == KindFailure && r.PeerPort == 9101 {
				return true
			}
		}
		return false
	})
	for _, w := range wants {
		cl := closeOf(recs, pair.ClientIP, func(r *Record) bool { return r.LocalPort == w.port })
		assert.Equal(t, w.client.String(), cl.CloseCause().String(), "client: %s (errno %d, flags %b, %v -> CLOSE)", w.what, cl.Errno, cl.Flags, cl.OldState)
		if w.server != CauseNone {
			sv := closeOf(recs, pair.ServerIP, func(r *Record) bool { return r.PeerPort == w.port })
			assert.Equal(t, w.server.String(), sv.CloseCause().String(), "server: %s (errno %d, flags %b, %v -> CLOSE)", w.what, sv.Errno, sv.Flags, sv.OldState)
		}
	}
	for _, r := range recs {
		switch {
		case r.Kind == KindFailure && r.PeerPort == 9101:
			assert.Equal(t, ErrorRefused, r.Error())
			assert.Equal(t, CauseNone, r.CloseCause(), "a failure has an error type, not a close cause")
		case r.Kind == KindOpen || r.Kind == KindUpdate:
			assert.Zero(t, r.Flags&FlagResetSent)
		}
	}
}

// tcpInq is how many bytes wait unread in c's receive queue.
func tcpInq(t *testing.T, c net.Conn) int {
	rc, err := c.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var n int
	var ierr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		n, ierr = ioctlInq(int(fd))
	}))
	if ierr != nil && !errors.Is(ierr, syscall.EINTR) {
		t.Fatalf("SIOCINQ: %v", ierr)
	}
	return n
}

func ioctlInq(fd int) (int, error) { return unix.IoctlGetInt(fd, unix.SIOCINQ) }

func itoa(port uint16) string { return strconv.Itoa(int(port)) }

// TestRefusedConnectsCounted: the server's side of a refused connect,
// which has no socket and makes no record, is counted by the refusing
// address (tp_btf mode), SYNs only: a stray ACK's RST is not a connect.
func TestRefusedConnectsCounted(t *testing.T) {
	const refusals = 5
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	count := func() (n uint64) {
		require.NoError(t, p.Refused(func(r Refused) {
			if r.Local == pair.ServerIP {
				n = r.Count
				ino, err := pair.Server.Inode()
				require.NoError(t, err)
				assert.Equal(t, uint32(ino), r.NetNS)
			}
		}))
		return n
	}
	require.Zero(t, count())
	for range refusals {
		require.NoError(t, netnstest.Refused(t.Context(), pair, 9600))
	}
	assert.Equal(t, uint64(refusals), count())

	// A segment of a connection the server forgot gets a RST from no
	// socket too, but it is no connect: not counted. (The server's socket
	// is killed with its own RST dropped, so the client goes on writing.)
	l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, 9601).String())
	require.NoError(t, err)
	defer l.Close()
	c, err := pair.Client.Dial(t.Context(), l.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	s, err := l.Accept()
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, l.Close())
	iptables(t, pair.Server, "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP")
	out, err := exec.Command("ip", "netns", "exec", pair.Server.Name, "ss", "-K", "-t", "sport", "=", ":9601").CombinedOutput()
	require.NoError(t, err, "ss -K: %s", out)
	iptables(t, pair.Server, "-D", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP")
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Write([]byte("anyone?"))
	require.NoError(t, err)
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, syscall.ECONNRESET, "the server's namespace answered with a RST from no socket")
	require.Equal(t, uint64(refusals), count())
}
