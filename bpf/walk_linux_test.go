package bpf

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// sink accepts connections and reads them until EOF.
func sink(t testing.TB, pair *netnstest.Pair, port string) string {
	t.Helper()
	l, err := pair.Server.Listen(pair.ServerIP.String() + ":" + port)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	serve(l, func(c net.Conn) { _, _ = io.Copy(io.Discard, c); c.Close() })
	return pair.ServerIP.String() + ":" + port
}

// serve accepts connections on l until it is closed, each handled by
// handle in a goroutine of its own.
func serve(l net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}

// openAndClose opens n connections from the client namespace to target,
// one after the other, closing each at once.
func openAndClose(pair *netnstest.Pair, target string, n int) error {
	return pair.Client.Do(func() error {
		for range n {
			c, err := net.Dial("tcp", target)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	})
}

func send(t *testing.T, c net.Conn, n int) {
	t.Helper()
	_, err := c.Write(make([]byte, n))
	require.NoError(t, err)
}

// walkOf returns the update records of the pair's connections by the
// client's address: the client's end, and the server's (peer).
func walkOf(t *testing.T, p *Probe, pair *netnstest.Pair) (client, server map[netip.AddrPort]Record) {
	t.Helper()
	client, server = map[netip.AddrPort]Record{}, map[netip.AddrPort]Record{}
	start := time.Now()
	var first, last time.Time
	_, err := p.Walk(func(r *Record) {
		if first.IsZero() {
			first = r.Time
		}
		last = r.Time
		switch r.LocalAddr {
		case pair.ClientIP:
			client[netip.AddrPortFrom(r.LocalAddr, r.LocalPort)] = *r
		case pair.ServerIP:
			server[netip.AddrPortFrom(r.PeerAddr, r.PeerPort)] = *r
		}
	})
	require.NoError(t, err)
	// The clocks' offset is measured once, at Load: a second either way.
	assert.WithinRange(t, first, start.Add(-time.Second), time.Now().Add(time.Second), "the walk's records bear its time")
	assert.WithinRange(t, last, start.Add(-time.Second), time.Now().Add(time.Second))
	return client, server
}

// TestWalkReportsEveryEstablishedConnection: the walk reports the
// connections of every namespace, idle or not, opened under the probe or
// before it, with their cumulative counters; the ids are those of the
// connections' open and close records.
func TestWalkReportsEveryEstablishedConnection(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	target := sink(t, pair, "7000")
	ctx := t.Context()

	// A connection opened before the probe exists.
	before, err := pair.Client.Dial(ctx, target)
	require.NoError(t, err)
	defer before.Close()
	send(t, before, 1000)

	p := loadProbe(t, Options{Mode: AttachTPBTF})
	require.NoError(t, p.CanWalk())
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP })
	after, err := pair.Client.Dial(ctx, target)
	require.NoError(t, err)
	defer after.Close()
	send(t, after, 2000)
	time.Sleep(50 * time.Millisecond) // let the server read

	beforeAddr := netip.MustParseAddrPort(before.LocalAddr().String())
	afterAddr := netip.MustParseAddrPort(after.LocalAddr().String())
	open := col.waitFor(t, "the open record", func(rs []Record) bool { return len(rs) == 1 })[0]
	require.Equal(t, KindOpen, open.Kind)

	// Both ends of both connections, while they are idle.
	w, ws := walkOf(t, p, pair)
	require.Contains(t, w, afterAddr)
	out := w[afterAddr]
	assert.Equal(t, KindUpdate, out.Kind)
	assert.Equal(t, open.ConnID, out.ConnID, "the walk names the connection as its open record did")
	assert.Equal(t, StateEstablished, out.NewState)
	assert.True(t, out.Start.IsZero(), "start, direction and process come with the open record only")
	assert.Equal(t, DirectionUnknown, out.Direction)
	assert.Equal(t, FlagConnected, out.Flags&FlagConnected, "connect() picked its port: the client")
	assert.Equal(t, uint64(2000), out.BytesSent, "the client's SYN taken out")
	assert.True(t, out.ISNKnown)
	out.SetDirection(open.Direction)
	assert.Equal(t, uint64(2000), out.BytesSent, "and not twice")
	in := ws[afterAddr]
	assert.Zero(t, in.Flags&FlagConnected, "the server's port was bound")
	assert.Equal(t, uint64(2000), in.BytesReceived)
	assert.NotEqual(t, out.ConnID, in.ConnID, "each end is its own connection")

	require.Contains(t, w, beforeAddr)
	old := w[beforeAddr]
	assert.Equal(t, uint64(1000), old.BytesSent, "cumulative: includes what flowed before the probe")
	assert.NotZero(t, old.ConnID)
	assert.Equal(t, uint64(1000), ws[beforeAddr].BytesReceived)
	w, _ = walkOf(t, p, pair)
	assert.Equal(t, old.ConnID, w[beforeAddr].ConnID, "stable from walk to walk")

	// Its close record belongs to the same connection.
	send(t, before, 500)
	require.NoError(t, before.Close())
	recs := col.waitFor(t, "the older connection's close", func(rs []Record) bool { return len(rs) == 2 })
	closed := recs[1]
	assert.Equal(t, KindClose, closed.Kind)
	assert.Equal(t, beforeAddr, netip.AddrPortFrom(closed.LocalAddr, closed.LocalPort))
	assert.Equal(t, old.ConnID, closed.ConnID)
	assert.Equal(t, FlagFinAcked, closed.Flags&FlagFinAcked, "our FIN acknowledged")
	closed.SetDirection(DirectionOutbound)
	assert.Equal(t, uint64(1500), closed.BytesSent)
	w, _ = walkOf(t, p, pair)
	assert.NotContains(t, w, beforeAddr, "a closed connection is not reported")
}

func TestWalkNotSupportedInRawTP(t *testing.T) {
	p := loadProbe(t, Options{Mode: AttachRawTP})
	_, err := p.Walk(func(*Record) {})
	require.ErrorIs(t, err, ErrNotSupported)
}

// TestWalkSkipsNamespacesWithoutTCP: the walk runs no iterator in a
// namespace without a TCP socket (each run scans every socket on the
// host), still reads its listener counters, and walks it again once it
// has a listener, IPv6 ones counted.
func TestWalkSkipsNamespacesWithoutTCP(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	target := sink(t, pair, "7002")
	empty := netnstest.NewNS(t, fmt.Sprintf("tce%d", os.Getpid()%100000))
	// Every walk in each namespace (the tracked table's walk runs in none).
	p := loadProbe(t, Options{Mode: AttachTPBTF, noTrackedWalk: true})
	c, err := pair.Client.Dial(t.Context(), target)
	require.NoError(t, err)
	defer c.Close()
	inode := func(ns *netnstest.NS) uint32 {
		ino, err := ns.Inode()
		require.NoError(t, err)
		return uint32(ino)
	}

	w, _ := walkOf(t, p, pair)
	assert.Contains(t, w, netip.MustParseAddrPort(c.LocalAddr().String()))
	assert.Contains(t, p.walkSkipped, inode(empty))
	assert.NotContains(t, p.walkSkipped, inode(pair.Client))
	assert.NotContains(t, p.walkSkipped, inode(pair.Server))
	read := false
	require.NoError(t, p.Listen(func(ls ListenStats) { read = read || ls.NetNS == inode(empty) }))
	assert.True(t, read, "its listener counters read all the same")

	l, err := empty.Listen("[::1]:7003")
	require.NoError(t, err)
	defer l.Close()
	walkOf(t, p, pair)
	assert.NotContains(t, p.walkSkipped, inode(empty), "an IPv6 listener")
	var port uint16
	p.Backlogs(func(b Backlog) {
		if b.NetNS == inode(empty) {
			port = b.Port
		}
	})
	assert.Equal(t, uint16(7003), port, "its accept queue reported")
}
