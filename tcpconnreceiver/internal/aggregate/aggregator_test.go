package aggregate

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// byPeer puts each peer workload in a series of its own.
func byPeer(c *conntable.Conn, e bpf.ErrorType, k *Key) {
	k.Direction, k.Error, k.Labels[0] = c.Direction, e, c.Peer.Workload
}

func record(kind bpf.Kind, peer string, at time.Time) (*bpf.Record, *conntable.Observation) {
	rec := &bpf.Record{Kind: kind, Direction: bpf.DirectionOutbound, Time: at, Start: at.Add(-time.Second), SRTT: time.Millisecond}
	return rec, &conntable.Observation{Local: &identity.Identity{}, Peer: &identity.Identity{Workload: peer}}
}

func series(a *Aggregator) map[string]*Series {
	out := map[string]*Series{}
	a.Collect(t0.Add(time.Hour), func(views []*View) {
		views[0].Range(func(k *Key, s *Series) { out[k.Labels[0]] = s })
	})
	return out
}

func TestAddCountsEventsAndTraffic(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewWorkload, Project: byPeer, Histograms: true}}, Limits{Series: 10})
	rec, o := record(bpf.KindOpen, "db", t0)
	o.BecameOpen = true
	a.Add(rec, o)
	rec, o = record(bpf.KindClose, "db", t0.Add(time.Second))
	o.WasOpen, o.Delta = true, conntable.Counters{Sent: 100, Received: 20, Retransmits: 2, Lost: 1}
	a.Add(rec, o)
	rec, o = record(bpf.KindFailure, "db", t0)
	rec.Errno = 111
	a.Add(rec, o)

	var ok, failed *Series
	a.Collect(t0, func(views []*View) {
		views[0].Range(func(k *Key, s *Series) {
			if k.Error == bpf.ErrorRefused {
				failed = s
			} else {
				ok = s
			}
		})
	})
	require.NotNil(t, ok)
	require.NotNil(t, failed, "a failure is a series of its own, by error type")
	assert.Equal(t, Values{Opened: 1, Closed: 1, Open: 0, Counters: conntable.Counters{Sent: 100, Received: 20, Retransmits: 2, Lost: 1}}, ok.V)
	assert.Equal(t, uint64(1), failed.V.Failed)
	assert.Equal(t, uint64(1), ok.Duration.Count)
	assert.Equal(t, uint64(1), ok.RTT.Count)
}

// Retransmits by type are counted from every record that grew them, as
// the counters are: an open's handshake retransmits, a report's, a
// close's; a failure's count nowhere, as none of its counters do.
func TestAddCountsRetransmitsByTypeAsTheyGrow(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewWorkload, Project: byPeer}}, Limits{Series: 10})
	for _, e := range []struct {
		kind bpf.Kind
		typ  bpf.RetransmitType
	}{{bpf.KindOpen, bpf.RetransmitSYN}, {bpf.KindUpdate, bpf.RetransmitFast}, {bpf.KindClose, bpf.RetransmitTimeout}, {bpf.KindFailure, bpf.RetransmitSYN}} {
		rec, o := record(e.kind, "db", t0)
		o.RetransmitsByType[e.typ] = 2
		if e.kind == bpf.KindFailure {
			rec.Errno = 111
		}
		a.Add(rec, o)
	}
	var got [bpf.RetransmitTypes]uint64
	a.Collect(t0, func(views []*View) {
		views[0].Range(func(k *Key, s *Series) {
			for i, n := range s.V.RetransmitsByType {
				got[i] += n
			}
		})
	})
	assert.Equal(t, [bpf.RetransmitTypes]uint64{bpf.RetransmitSYN: 2, bpf.RetransmitTimeout: 2, bpf.RetransmitFast: 2}, got)
}

func TestOverflowAndExpiry(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewService, Project: byPeer}}, Limits{Series: 2, Expiry: time.Minute})
	for i, peer := range []string{"a", "b", "c", "d"} {
		rec, o := record(bpf.KindOpen, peer, t0.Add(time.Duration(i)*time.Second))
		a.Add(rec, o)
	}
	got := series(a)
	assert.Len(t, got, 0, "an hour later every series without an open connection expired")

	a = New([]ViewSpec{{Kind: ViewService, Project: byPeer}}, Limits{Series: 2})
	for _, peer := range []string{"a", "b", "c", "d"} {
		rec, o := record(bpf.KindOpen, peer, t0)
		o.BecameOpen = true
		a.Add(rec, o)
	}
	got = series(a)
	assert.Len(t, got, 3, "two series and the overflow series")
	require.Contains(t, got, Overflow)
	assert.Equal(t, uint64(2), got[Overflow].V.Opened)
	a.Collect(t0, func(views []*View) { assert.Equal(t, int64(2), views[0].Overflowed()) })

	// A lost close takes the connection off its series' open count.
	a.Forget([]conntable.Conn{{Direction: bpf.DirectionOutbound, Local: &identity.Identity{}, Peer: &identity.Identity{Workload: "a"}}})
	assert.Zero(t, series(a)["a"].V.Open)
}

func TestNoAllocationPerRecord(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewWorkload, Project: byPeer, Histograms: true}, {Kind: ViewService, Project: byPeer}}, Limits{Series: 10})
	rec, o := record(bpf.KindClose, "db", t0)
	a.Add(rec, o)
	assert.Zero(t, testing.AllocsPerRun(100, func() { a.Add(rec, o) }))
}

func TestAddCountsResetsByCause(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewWorkload, Project: byPeer}}, Limits{Series: 10})
	for _, c := range []struct {
		errno int32
		flags bpf.Flags
	}{{104, 0}, {32, 0}, {0, bpf.FlagResetSent}, {0, 0}, {110, bpf.FlagResetSent}} {
		rec, o := record(bpf.KindClose, "db", t0)
		rec.Errno, rec.Flags = c.errno, c.flags
		a.Add(rec, o)
	}
	var s *Series
	a.Collect(t0, func(views []*View) { views[0].Range(func(_ *Key, x *Series) { s = x }) })
	require.NotNil(t, s)
	assert.Equal(t, uint64(5), s.V.Closed)
	assert.Equal(t, uint64(2), s.V.ResetsReceived, "ECONNRESET, EPIPE")
	assert.Equal(t, uint64(1), s.V.ResetsSent, "a keepalive timeout's reset is a timeout")
	assert.Equal(t, Values{ResetsReceived: 1}, Values{ResetsReceived: 3, ResetsSent: 2}.Sub(Values{ResetsReceived: 2, ResetsSent: 2}))
}

func TestAddObservesHandshakesAtOpen(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewWorkload, Project: byPeer, Histograms: true}}, Limits{Series: 10})
	rec, o := record(bpf.KindOpen, "db", t0)
	rec.Handshake = 1020 * time.Millisecond
	a.Add(rec, o)
	rec, o = record(bpf.KindClose, "db", t0.Add(time.Second))
	rec.Handshake = 1020 * time.Millisecond // carried on from the open: not observed again
	a.Add(rec, o)
	rec, o = record(bpf.KindOpen, "db", t0)
	a.Add(rec, o) // unknown: not observed
	s := series(a)["db"]
	require.NotNil(t, s)
	assert.Equal(t, uint64(1), s.Handshake.Count)
	assert.InDelta(t, 1.02, s.Handshake.Sum, 1e-9)
	i := 0
	for HandshakeBounds[i] < 1.02 {
		i++
	}
	assert.Equal(t, uint64(1), s.Handshake.Counts[i], "in the bucket up to %v s", HandshakeBounds[i])
}

func TestAddRefusedCountsInWorkloadViewsOnly(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewWorkload, Project: byPeer, PeerAddr: true}, {Kind: ViewService, Project: byPeer}}, Limits{Series: 10})
	c := conntable.Conn{Local: &identity.Identity{}, Peer: &identity.Identity{Workload: "unknown"}, Direction: bpf.DirectionInbound}
	a.AddRefused(&c, 3, t0)
	a.AddRefused(&c, 2, t0)
	var workload, service int
	a.Collect(t0, func(views []*View) {
		views[0].Range(func(k *Key, s *Series) {
			workload++
			assert.Equal(t, uint64(5), s.V.Refused)
			assert.Equal(t, "unknown", k.PeerAddr, "no peer address")
		})
		views[1].Range(func(*Key, *Series) { service++ })
	})
	assert.Equal(t, 1, workload)
	assert.Zero(t, service, "no service: no connection")
}

// The peer-address cache is bounded by the series limit, what it cannot
// hold is counted as overflow, and it shrinks with the series' expiry.
func TestPeerAddressCacheBoundedAndExpired(t *testing.T) {
	a := New([]ViewSpec{{Kind: ViewWorkload, Project: byPeer, PeerAddr: true}}, Limits{Series: 2, Expiry: time.Minute})
	add := func(ip string, at time.Time) {
		rec, o := record(bpf.KindOpen, "db", at)
		rec.PeerAddr = netip.MustParseAddr(ip)
		a.Add(rec, o)
	}
	addrs := func(at time.Time) (out []string, overflowed int64) {
		a.Collect(at, func(views []*View) {
			views[0].Range(func(k *Key, _ *Series) { out = append(out, k.PeerAddr) })
			overflowed = views[0].Overflowed()
		})
		slices.Sort(out)
		return out, overflowed
	}
	add("10.0.0.1", t0)
	add("10.0.0.2", t0)
	add("10.0.0.3", t0) // the view and the cache hold two
	got, overflowed := addrs(t0)
	assert.Equal(t, []string{"", "10.0.0.1", "10.0.0.2"}, got, "the overflow series has no address")
	assert.Equal(t, int64(1), overflowed, "the third address is counted")

	// An hour later every series expired, and the cache with them: a new
	// address gets its own string again (not "overflow").
	_, _ = addrs(t0.Add(time.Hour))
	add("10.0.0.4", t0.Add(time.Hour))
	got, overflowed = addrs(t0.Add(time.Hour))
	assert.Equal(t, []string{"10.0.0.4"}, got)
	assert.Equal(t, int64(1), overflowed)
}

// The aggregator remembers each connection's series by its ends (the
// resolver's shared identities) until the next Collect: records of one
// series add up there, a record the full view sends to the overflow
// series is counted as overflow each time, and a series that expired at
// a Collect starts anew when its connections come back.
func TestSeriesRememberedUntilCollect(t *testing.T) {
	local, db, cache := &identity.Identity{}, &identity.Identity{Workload: "db"}, &identity.Identity{Workload: "cache"}
	a := New([]ViewSpec{{Kind: ViewService, Project: byPeer}}, Limits{Series: 1, Expiry: time.Minute})
	add := func(peer *identity.Identity, at time.Time) {
		rec, o := record(bpf.KindOpen, "", at)
		o.Local, o.Peer = local, peer
		a.Add(rec, o)
	}
	for range 2 {
		add(db, t0)
		add(cache, t0) // the view holds one series: to the overflow series
	}
	var overflowed int64
	a.Collect(t0, func(views []*View) { overflowed = views[0].Overflowed() })
	got := series(a) // an hour later: both expired
	assert.Equal(t, int64(2), overflowed, "each record sent to the overflow series")
	assert.Empty(t, got)

	later := t0.Add(2 * time.Hour)
	add(db, later)
	add(db, later)
	got = map[string]*Series{}
	a.Collect(later, func(views []*View) { views[0].Range(func(k *Key, s *Series) { got[k.Labels[0]] = s }) })
	require.Contains(t, got, "db", "a new series, not the expired one")
	assert.Equal(t, uint64(2), got["db"].V.Opened)
	assert.True(t, later.Equal(got["db"].Start))
}
