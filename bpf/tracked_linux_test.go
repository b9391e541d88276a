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

// trackedSlot is the Go image of struct tracked (tcpconn.bpf.c).
type trackedSlot struct {
	Cookie, Sk uint64
}

// trackedOf returns the occupied slots of the tracked table by cookie.
func trackedOf(t *testing.T, p *Probe) map[uint64]uint32 {
	t.Helper()
	out := map[uint64]uint32{}
	var k uint32
	var v trackedSlot
	it := p.objs.Tracked.Iterate()
	for it.Next(&k, &v) {
		if v.Cookie != 0 {
			out[v.Cookie] = k
		}
	}
	require.NoError(t, it.Err())
	return out
}

// dialMany opens n connections to target from the pair's client, each
// sending 100*(i+1) bytes.
func dialMany(t *testing.T, pair *netnstest.Pair, target string, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	for i := range n {
		c, err := pair.Client.Dial(t.Context(), target)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		send(t, c, 100*(i+1))
		conns = append(conns, c)
	}
	time.Sleep(50 * time.Millisecond) // let the server read
	return conns
}

// TestWalkTrackedTable: after the first walk (in each namespace, which
// finds the connections open before the probe), walks read the probe's
// table of established sockets instead, once for every namespace, and
// report the same: both ends of every connection, opened before the probe
// or under it, with the same ids and counters. A closed socket leaves the
// table; a slot naming a socket gone is freed and counted.
func TestWalkTrackedTable(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	target := sink(t, pair, "7010")
	before := dialMany(t, pair, target, 3)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	require.NotNil(t, p.reportTracked, "this kernel has bpf_rdonly_cast")
	after := dialMany(t, pair, target, 5)
	conns := append(before, after...)

	first, firstServer := walkOf(t, p, pair)
	require.True(t, p.lastPerNetns, "the first walk runs in each namespace")
	w, ws := walkOf(t, p, pair)
	require.False(t, p.lastPerNetns, "later walks read the table")
	require.Len(t, w, len(conns))
	require.Len(t, ws, len(conns))
	slots := trackedOf(t, p)
	for i, c := range conns {
		a := netip.MustParseAddrPort(c.LocalAddr().String())
		require.Contains(t, w, a)
		out, in := w[a], ws[a]
		assert.Equal(t, first[a].ConnID, out.ConnID)
		assert.Equal(t, firstServer[a].ConnID, in.ConnID)
		want := 100 * (i + 1) // before the probe
		if i >= len(before) {
			want = 100 * (i - len(before) + 1)
		}
		assert.Equal(t, uint64(want), out.BytesSent, "client %v", a)
		assert.Equal(t, out.BytesSent, in.BytesReceived, "server end of %v", a)
		assert.Equal(t, first[a].SegsOut, out.SegsOut, "idle since the first walk")
		assert.Equal(t, first[a].ClientISN, out.ClientISN)
		assert.Equal(t, first[a].Flags&FlagConnected, out.Flags&FlagConnected)
		assert.Equal(t, StateEstablished, out.NewState)
		assert.Contains(t, slots, out.ConnID, "the client end holds a slot")
		assert.Contains(t, slots, in.ConnID, "the server end holds a slot")
	}

	// A closed connection leaves the table and the walk.
	gone := netip.MustParseAddrPort(conns[0].LocalAddr().String())
	require.NoError(t, conns[0].Close())
	require.Eventually(t, func() bool {
		s := trackedOf(t, p)
		_, c := s[w[gone].ConnID]
		_, sv := s[ws[gone].ConnID]
		return !c && !sv
	}, 5*time.Second, 20*time.Millisecond, "both ends give their slots back")
	w, _ = walkOf(t, p, pair)
	assert.False(t, p.lastPerNetns)
	assert.NotContains(t, w, gone)
	assert.Len(t, w, len(conns)-1)

	// A slot whose socket's cookie is another's: the walk frees it.
	live := w[netip.MustParseAddrPort(conns[1].LocalAddr().String())]
	var slot trackedSlot
	require.NoError(t, p.objs.Tracked.Lookup(slots[live.ConnID], &slot))
	free := uint32(0)
	for ; free < p.objs.Tracked.MaxEntries(); free++ {
		var v trackedSlot
		require.NoError(t, p.objs.Tracked.Lookup(free, &v))
		if v.Cookie == 0 {
			break
		}
	}
	slot.Cookie = live.ConnID ^ 1<<62
	require.NoError(t, p.objs.Tracked.Update(free, &slot, 0))
	s0, err := p.Stats()
	require.NoError(t, err)
	w, _ = walkOf(t, p, pair)
	assert.Len(t, w, len(conns)-1, "the stale slot reports nothing")
	s1, err := p.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), s1.Stale-s0.Stale)
	require.NoError(t, p.objs.Tracked.Lookup(free, &slot))
	assert.Zero(t, slot.Cookie, "freed")
}

// TestWalkTrackedTableFull: sockets the table has no room for are counted,
// and the walks run in each namespace while that count grows, reporting
// every connection; once the table has room again walks read it.
func TestWalkTrackedTableFull(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	target := sink(t, pair, "7011")
	// Two sets of eight slots, for 24 sockets and the host's others.
	p := loadProbe(t, Options{Mode: AttachTPBTF, TrackedSockets: 16})
	conns := dialMany(t, pair, target, 12)
	s, err := p.Stats()
	require.NoError(t, err)
	require.NotZero(t, s.Untracked, "24 sockets in 16 slots")

	walkOf(t, p, pair)
	for range 2 {
		w, ws := walkOf(t, p, pair)
		assert.True(t, p.lastPerNetns, "the table lacked room: walks run in each namespace")
		assert.Len(t, w, len(conns))
		assert.Len(t, ws, len(conns))
	}

	for _, c := range conns[2:] {
		require.NoError(t, c.Close())
	}
	// Slots free as the sockets close (the server's ends after the
	// client's FIN); other tests' sockets on the host may hold some a
	// while.
	require.Eventually(t, func() bool {
		w, ws := walkOf(t, p, pair)
		return !p.lastPerNetns && len(w) == 2 && len(ws) == 2
	}, 20*time.Second, 200*time.Millisecond, "walks read the table again, and it holds both ends of what is open")
}
