package bpf

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// sink accepts connections and reads them until EOF.
func sink(t *testing.T, pair *netnstest.Pair, port string) string {
	t.Helper()
	l, err := pair.Server.Listen(pair.ServerIP.String() + ":" + port)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return pair.ServerIP.String() + ":" + port
}

func send(t *testing.T, c net.Conn, n int) {
	t.Helper()
	_, err := c.Write(make([]byte, n))
	require.NoError(t, err)
}

// walkOf returns the update records of the pair's connections.
func walkOf(t *testing.T, p *Probe, pair *netnstest.Pair) map[netip.AddrPort]Record {
	t.Helper()
	out := map[netip.AddrPort]Record{}
	_, err := p.Walk(func(r *Record) {
		if r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP {
			out[netip.AddrPortFrom(r.LocalAddr, r.LocalPort)] = *r
		}
	})
	require.NoError(t, err)
	return out
}

func TestWalkReportsIdleAndAdoptedConnections(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	target := sink(t, pair, "7000")
	ctx := t.Context()

	// A connection opened before the probe exists.
	before, err := pair.Client.Dial(ctx, target)
	require.NoError(t, err)
	defer before.Close()
	send(t, before, 1000)

	p := loadProbe(t, AttachTPBTF)
	require.NoError(t, p.CanWalk())
	after, err := pair.Client.Dial(ctx, target)
	require.NoError(t, err)
	defer after.Close()
	send(t, after, 2000)
	time.Sleep(50 * time.Millisecond) // let the server read

	beforeAddr := netip.MustParseAddrPort(before.LocalAddr().String())
	afterAddr := netip.MustParseAddrPort(after.LocalAddr().String())

	// The walk sees the connection opened under the probe, both ends,
	// while it is idle; not yet the older one.
	w := walkOf(t, p, pair)
	require.Contains(t, w, afterAddr)
	out := w[afterAddr]
	assert.Equal(t, KindUpdate, out.Kind)
	assert.Equal(t, DirectionOutbound, out.Direction)
	assert.Equal(t, StateEstablished, out.NewState)
	assert.Equal(t, uint64(2000), out.BytesSent)
	assert.Positive(t, out.Duration())
	var in Record
	for ap, r := range w {
		if ap.Addr() == pair.ServerIP && r.PeerPort == afterAddr.Port() {
			in = r
		}
	}
	assert.Equal(t, DirectionInbound, in.Direction)
	assert.Equal(t, uint64(2000), in.BytesReceived)
	assert.NotContains(t, w, beforeAddr)

	// Adoption gives the older connection state: reported from then on.
	n, err := p.Adopt()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, n, 2, "both ends of the older connection")
	w = walkOf(t, p, pair)
	require.Contains(t, w, beforeAddr)
	old := w[beforeAddr]
	assert.Equal(t, FlagAdopted, old.Flags&FlagAdopted)
	assert.Equal(t, uint64(1000), old.BytesSent, "cumulative: includes what flowed before the probe")
	assert.NotZero(t, old.ConnID)
	assert.True(t, old.Start.IsZero())

	// A second adoption finds nothing new.
	n, err = p.Adopt()
	require.NoError(t, err)
	assert.Zero(t, n)

	// Its close record belongs to the same connection.
	col := collect(p, func(r *Record) bool {
		return r.Kind == KindClose && netip.AddrPortFrom(r.LocalAddr, r.LocalPort) == beforeAddr
	})
	send(t, before, 500)
	require.NoError(t, before.Close())
	recs := col.waitFor(t, "the adopted connection's close", func(rs []Record) bool { return len(rs) == 1 })
	assert.Equal(t, old.ConnID, recs[0].ConnID)
	assert.Equal(t, uint64(1500), recs[0].BytesSent)
	assert.Equal(t, FlagAdopted, recs[0].Flags&FlagAdopted)
}

func TestWalkNotSupportedInRawTP(t *testing.T) {
	p := loadProbe(t, AttachRawTP)
	_, err := p.Walk(func(*Record) {})
	require.ErrorIs(t, err, ErrNotSupported)
	_, err = p.Adopt()
	require.ErrorIs(t, err, ErrNotSupported)
}
