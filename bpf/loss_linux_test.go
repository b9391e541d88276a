package bpf

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// lossOctet is the range of the loss and reset tests: 10.205.0.0/16.
const lossOctet = 205

// tcpInfo reads the socket's own counters (TCP_INFO).
func tcpInfo(c net.Conn) (*unix.TCPInfo, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return nil, err
	}
	return info, ierr
}

// settledInfo waits until everything c wrote is acknowledged, then reads
// its TCP_INFO: what the peer acknowledged is then all it was sent.
func settledInfo(c net.Conn) (*unix.TCPInfo, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := tcpInfo(c)
		if err != nil {
			return nil, err
		}
		if info.Unacked == 0 && info.Notsent_bytes == 0 {
			return info, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("still %d segments unacknowledged, %d bytes unsent", info.Unacked, info.Notsent_bytes)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// iptables runs iptables in ns.
func iptables(t *testing.T, ns *netnstest.NS, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "iptables"}, args...)...).CombinedOutput()
	require.NoError(t, err, "iptables %s: %s", strings.Join(args, " "), out)
}

// dropRule drops 3 % of TCP packets at chain (OUTPUT: the sender's own
// egress, as a qdisc or policer drops them; INPUT: lost on the way).
func dropRule(chain string) []string {
	return []string{chain, "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.03", "-j", "DROP"}
}

// lossyExchange is one connection: size bytes each way under the loss
// rules, each end's TCP_INFO once all it sent is acknowledged, the rules
// lifted, then a close by FIN or, with reset, by the client's RST
// (SO_LINGER 0).
type lossyExchange struct {
	clientPort         uint16
	client, server     unix.TCPInfo
	reset              bool
	oldClient, oldServ uint64 // bytes_sent - bytes_retrans, the former formula
}

func runLossyExchange(t *testing.T, pair *netnstest.Pair, l net.Listener, size int, reset bool, lift func()) lossyExchange {
	t.Helper()
	type result struct {
		info *unix.TCPInfo
		err  error
	}
	srvInfo := make(chan result, 1)
	srvDone := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srvInfo <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		if err := netnstest.Answer(c, size, size); err != nil {
			srvInfo <- result{err: err}
			return
		}
		info, err := settledInfo(c)
		srvInfo <- result{info, err}
		// Until the client's FIN (0 bytes, EOF) or its RST.
		n, err := io.Copy(io.Discard, c)
		if n != 0 {
			err = fmt.Errorf("%d bytes after the exchange", n)
		} else if reset && !errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("want a reset, got %v", err)
		} else if reset {
			err = nil
		}
		srvDone <- err
	}()

	c, err := pair.Client.Dial(t.Context(), l.Addr().String())
	require.NoError(t, err)
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	require.NoError(t, netnstest.Ask(c, size, size))
	ci, err := settledInfo(c)
	require.NoError(t, err)
	si := <-srvInfo
	require.NoError(t, si.err)
	lift()

	x := lossyExchange{
		clientPort: uint16(c.LocalAddr().(*net.TCPAddr).Port),
		client:     *ci, server: *si.info, reset: reset,
		oldClient: ci.Bytes_sent - ci.Bytes_retrans, oldServ: si.info.Bytes_sent - si.info.Bytes_retrans,
	}
	if reset {
		require.NoError(t, c.(*net.TCPConn).SetLinger(0))
	}
	require.NoError(t, c.Close())
	require.NoError(t, <-srvDone)
	return x
}

// TestExactBytesUnderLoss: megabyte exchanges with 3 % of the packets
// dropped on the client's egress, on the server's egress, or on the way in
// both directions; each connection ends by FIN or by the client's RST. Each
// end's close record carries exactly what its own TCP_INFO said once all
// it sent was acknowledged: bytes_acked less the SYN (client), bytes
// received, total retransmits. The former formula (bytes_sent -
// bytes_retrans) is shown wrong on the egress drops: a segment the local
// stack failed to send is sent again as new data.
func TestExactBytesUnderLoss(t *testing.T) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		t.Run(string(mode), func(t *testing.T) { testExactBytesUnderLoss(t, mode) })
	}
}

func testExactBytesUnderLoss(t *testing.T, mode AttachMode) {
	const (
		size  = 1 << 20
		conns = 4 // per scenario: two closed by FIN, two by RST
	)
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: mode})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP })
	l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, 9000).String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })

	type rule struct {
		ns    *netnstest.NS
		chain string
	}
	scenarios := []struct {
		name  string
		rules []rule
	}{
		{"client egress", []rule{{pair.Client, "OUTPUT"}}},
		{"server egress", []rule{{pair.Server, "OUTPUT"}}},
		{"network", []rule{{pair.Client, "INPUT"}, {pair.Server, "INPUT"}}},
	}
	var all []lossyExchange
	var egressOvercounts int
	for _, sc := range scenarios {
		for i := range conns {
			for _, r := range sc.rules {
				iptables(t, r.ns, append([]string{"-A"}, dropRule(r.chain)...)...)
			}
			lift := func() {
				for _, r := range sc.rules {
					iptables(t, r.ns, append([]string{"-D"}, dropRule(r.chain)...)...)
				}
			}
			x := runLossyExchange(t, pair, l, size, i%2 == 1, lift)
			t.Logf("%s, reset=%v: client acked %d retrans %d (bytes_sent-bytes_retrans %d); server acked %d retrans %d (bytes_sent-bytes_retrans %d)",
				sc.name, x.reset, x.client.Bytes_acked, x.client.Total_retrans, x.oldClient, x.server.Bytes_acked, x.server.Total_retrans, x.oldServ)
			if sc.name != "network" && (x.oldClient != size || x.oldServ != size) {
				egressOvercounts++
			}
			all = append(all, x)
		}
	}

	closeOf := func(rs []Record, local netip.Addr, match func(*Record) bool) (Record, bool) {
		for _, r := range rs {
			if r.Kind == KindClose && r.LocalAddr == local && match(&r) {
				return r, true
			}
		}
		return Record{}, false
	}
	recs := col.waitFor(t, "both close records of every connection", func(rs []Record) bool {
		for _, x := range all {
			if _, ok := closeOf(rs, pair.ClientIP, func(r *Record) bool { return r.LocalPort == x.clientPort }); !ok {
				return false
			}
			if _, ok := closeOf(rs, pair.ServerIP, func(r *Record) bool { return r.PeerPort == x.clientPort }); !ok {
				return false
			}
		}
		return true
	})
	for _, x := range all {
		cl, _ := closeOf(recs, pair.ClientIP, func(r *Record) bool { return r.LocalPort == x.clientPort })
		sv, _ := closeOf(recs, pair.ServerIP, func(r *Record) bool { return r.PeerPort == x.clientPort })
		cl.SetDirection(DirectionOutbound)
		sv.SetDirection(DirectionInbound)
		what := fmt.Sprintf("port %d reset=%v", x.clientPort, x.reset)
		// Payload: the SYN is the client's only extra acknowledged number
		// before the close; a listener's child never counts its SYN-ACK.
		assert.Equal(t, uint64(size), cl.BytesSent, "client sent, %s", what)
		assert.Equal(t, x.client.Bytes_acked-1, cl.BytesSent, "client sent = its bytes_acked less the SYN, %s", what)
		assert.Equal(t, x.client.Bytes_received, cl.BytesReceived, "client received, %s", what)
		assert.Equal(t, uint64(x.client.Total_retrans), cl.Retransmits, "client retransmits, %s", what)
		assert.Equal(t, x.server.Bytes_acked, sv.BytesSent, "server sent = its bytes_acked, %s", what)
		assert.Equal(t, x.server.Bytes_received, sv.BytesReceived, "server received, %s", what)
		assert.Equal(t, uint64(x.server.Total_retrans), sv.Retransmits, "server retransmits, %s", what)
		if x.reset {
			assert.Zero(t, cl.Flags&FlagFinAcked, "no FIN before the RST, %s", what)
			assert.Equal(t, int32(syscall.ECONNRESET), sv.Errno, "the server got the RST, %s", what)
		} else {
			assert.Equal(t, FlagFinAcked|FlagFinReceived, cl.Flags&(FlagFinAcked|FlagFinReceived), "FINs both ways, %s", what)
			assert.Equal(t, FlagFinAcked|FlagFinReceived, sv.Flags&(FlagFinAcked|FlagFinReceived), "FINs both ways, %s", what)
		}
	}
	// What the test stands on: the egress drops did make the former
	// formula wrong.
	assert.Positive(t, egressOvercounts, "no egress drop made bytes_sent - bytes_retrans differ from the payload")
}
