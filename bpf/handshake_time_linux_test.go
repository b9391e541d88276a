package bpf

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestHandshakeDuration: a server that drops every other SYN makes each
// connect wait for the SYN's retransmission, about 1 s: the client's open
// record says so (connect to established). The server's open record carries
// the SYN-ACK's round trip, which is its socket's RTT (TCP_INFO) before any
// data. A refused connect carries its time to failure.
func TestHandshakeDuration(t *testing.T) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		t.Run(string(mode), func(t *testing.T) { testHandshakeDuration(t, mode) })
	}
}

func testHandshakeDuration(t *testing.T, mode AttachMode) {
	const conns = 2
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: mode})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP })
	l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, 9200).String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	iptables(t, pair.Server, "-A", "INPUT", "-p", "tcp", "--syn", "--dport", "9200",
		"-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DROP")

	type conn struct {
		port     uint16
		took     time.Duration // connect() as the client saw it
		serverRT time.Duration // the server socket's RTT before any data
	}
	var cs []conn
	for range conns {
		begin := time.Now()
		c, err := pair.Client.Dial(t.Context(), l.Addr().String())
		require.NoError(t, err)
		took := time.Since(begin)
		s, err := l.Accept()
		require.NoError(t, err)
		info, err := tcpInfo(s)
		require.NoError(t, err)
		cs = append(cs, conn{uint16(c.LocalAddr().(*net.TCPAddr).Port), took, time.Duration(info.Rtt) * time.Microsecond})
		require.NoError(t, c.Close())
		require.NoError(t, s.Close())
	}
	require.NoError(t, netnstest.Refused(t.Context(), pair, 9201))

	open := func(rs []Record, local netip.Addr, match func(*Record) bool) *Record {
		for i := range rs {
			if rs[i].Kind == KindOpen && rs[i].LocalAddr == local && match(&rs[i]) {
				return &rs[i]
			}
		}
		return nil
	}
	recs := col.waitFor(t, "both opens of every connection and the failure", func(rs []Record) bool {
		for _, c := range cs {
			if open(rs, pair.ClientIP, func(r *Record) bool { return r.LocalPort == c.port }) == nil ||
				open(rs, pair.ServerIP, func(r *Record) bool { return r.PeerPort == c.port }) == nil {
				return false
			}
		}
		for _, r := range rs {
			if r.Kind == KindFailure && r.PeerPort == 9201 {
				return true
			}
		}
		return false
	})
	for _, c := range cs {
		cl := open(recs, pair.ClientIP, func(r *Record) bool { return r.LocalPort == c.port })
		sv := open(recs, pair.ServerIP, func(r *Record) bool { return r.PeerPort == c.port })
		t.Logf("port %d: client handshake %v (connect() took %v); server %v (its RTT %v)", c.port, cl.Handshake, c.took, sv.Handshake, c.serverRT)
		assert.InDelta(t, time.Second.Seconds(), cl.Handshake.Seconds(), 0.3, "one SYN retransmission: about 1 s")
		assert.LessOrEqual(t, cl.Handshake, c.took, "within the connect() the client timed")
		assert.Equal(t, cl.Time.Sub(cl.Start), cl.Handshake)
		assert.Equal(t, uint64(1), cl.Retransmits, "the SYN, once")
		assert.Positive(t, sv.Handshake)
		assert.Equal(t, c.serverRT, sv.Handshake, "the SYN-ACK's round trip, the server's first RTT sample")
		assert.Less(t, sv.Handshake, 100*time.Millisecond, "the server saw one SYN only")
	}
	for _, r := range recs {
		switch r.Kind {
		case KindFailure:
			assert.Equal(t, r.Duration(), r.Handshake, "time to failure")
			assert.Positive(t, r.Handshake)
		case KindClose:
			assert.Zero(t, r.Handshake, "close records get it from the connection table")
		}
	}
}
