package conntable

import (
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

// trackerScript feeds records to a Table and sums what it counted.
type trackerScript struct {
	t    *testing.T
	tr   *Table
	sent uint64
	open int
}

func (s *trackerScript) feed(kind bpf.Kind, sent uint64, mod func(*bpf.Record)) *bpf.Record {
	rec := &bpf.Record{Kind: kind, ConnID: 42, BytesSent: sent, Time: t0.Add(time.Second)}
	if mod != nil {
		mod(rec)
	}
	o, keep := s.tr.Observe(rec)
	if keep {
		s.sent += o.Delta.Sent
		if o.BecameOpen {
			s.open++
		}
		if o.WasOpen {
			s.open--
		}
	}
	return rec
}

func (s *trackerScript) walk(baseline bool, sent uint64) {
	s.tr.BeginWalk(baseline)
	s.feed(bpf.KindUpdate, sent, nil)
	s.tr.EndWalk()
}

func opened(r *bpf.Record) {
	r.Direction, r.Start, r.PID, r.Comm = bpf.DirectionOutbound, t0, 4242, [16]byte{'c', 'u', 'r', 'l'}
}

func TestTrackerCompletesLaterRecordsFromTheOpen(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, true, false)}
	s.feed(bpf.KindOpen, 0, opened)
	closed := s.feed(bpf.KindClose, 900, nil)
	assert.Equal(t, bpf.DirectionOutbound, closed.Direction)
	assert.True(t, t0.Equal(closed.Start))
	assert.Equal(t, uint32(4242), closed.PID)
	assert.Equal(t, "curl", closed.CommString())
	assert.Zero(t, closed.Flags&bpf.FlagAdopted)
	assert.Equal(t, uint64(900), s.sent)
	assert.Zero(t, s.open)
}

func TestTrackerNeverSeenOpenIsAdopted(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, true, false)}
	closed := s.feed(bpf.KindClose, 900, nil)
	assert.Equal(t, bpf.FlagAdopted, closed.Flags&bpf.FlagAdopted)
	assert.Equal(t, uint64(900), s.sent, "it opened after the start: all of it is new")
}

// An open record still queued in the ring buffer when a walk reports the
// connection: counted once, whichever way round.
func TestTrackerOpenAfterItsFirstUpdate(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, true, false)}
	s.walk(false, 1000)
	s.feed(bpf.KindOpen, 0, opened)
	s.walk(false, 1500)
	closed := s.feed(bpf.KindClose, 1700, nil)
	assert.Equal(t, uint64(1700), s.sent)
	assert.True(t, t0.Equal(closed.Start), "the late open record still says how it began")
	assert.Zero(t, closed.Flags&bpf.FlagAdopted)
	assert.Zero(t, s.open)
}

// The same at the start-up walk: the connection opened under the probe,
// so what the walk took as a baseline is counted once the open arrives.
func TestTrackerOpenAfterTheStartUpWalk(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, true, false)}
	s.walk(true, 1000)
	assert.Zero(t, s.sent, "taken as a baseline")
	s.feed(bpf.KindOpen, 0, opened)
	s.walk(false, 1500)
	assert.Equal(t, uint64(1500), s.sent)
}

func TestTrackerAdoptsOrIgnoresConnectionsOpenAtStart(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, true, false)}
	s.walk(true, 1000)
	s.walk(false, 1500)
	s.feed(bpf.KindClose, 1600, nil)
	assert.Equal(t, uint64(600), s.sent, "adopted: what flowed after the start")

	s = &trackerScript{t: t, tr: New(identity.AddressOnly{}, false, false)}
	s.walk(true, 1000)
	s.walk(false, 1500)
	s.feed(bpf.KindClose, 1600, nil)
	assert.Zero(t, s.sent, "not adopted: left alone")
	require.Zero(t, s.tr.Len(), "forgotten at its close")
}

// The retransmits by type counted so far are kept in Table.typed, for
// the connections that retransmitted, so that connState stays within two
// cache lines.
func TestConnStateFitsInTwoCacheLines(t *testing.T) {
	assert.LessOrEqual(t, unsafe.Sizeof(connState{}), uintptr(maxConnState))
}

// Without adopt_existing, a connection the start-up walk set aside whose
// open record was still queued opened under the probe: it is tracked.
func TestTrackerQueuedOpenAfterTheStartUpWalkIsTracked(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, false, false)}
	s.walk(true, 1000)
	s.feed(bpf.KindOpen, 0, opened)
	s.walk(false, 1500)
	s.feed(bpf.KindClose, 1600, nil)
	assert.Equal(t, uint64(1600), s.sent)
	assert.Zero(t, s.open)
}

// A raw_tp connection id used again after the first connection's close was
// lost: the second connection counts from zero.
func TestTrackerIDUsedAgainAfterALostClose(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, true, false)}
	s.feed(bpf.KindOpen, 0, opened)
	s.walk(false, 5000) // its close record is lost
	s.feed(bpf.KindOpen, 0, opened)
	s.feed(bpf.KindClose, 700, nil)
	assert.Equal(t, uint64(5000+700), s.sent)
}

// TestHandshakeCarriedToLaterRecords: the open record's handshake goes on
// the connection's update and close records.
func TestHandshakeCarriedToLaterRecords(t *testing.T) {
	s := &trackerScript{t: t, tr: New(identity.AddressOnly{}, true, false)}
	s.feed(bpf.KindOpen, 0, func(r *bpf.Record) { r.Direction, r.Handshake = bpf.DirectionOutbound, 7*time.Millisecond })
	assert.Equal(t, 7*time.Millisecond, s.feed(bpf.KindUpdate, 10, nil).Handshake)
	assert.Equal(t, 7*time.Millisecond, s.feed(bpf.KindClose, 10, nil).Handshake)
}

// A periodic walk meets an inbound connection before its queued open
// record: nothing is counted or labelled until the open arrives, so the
// connection is labelled inbound, its local end as the server, from the
// start; a connection whose open never comes is adopted at the next walk.
func TestWalkBeforeOpenWaitsForTheDirection(t *testing.T) {
	tr := New(fixedResolver(), true, false)
	recs := fixedRecords()
	open := recs[1] // inbound open of connection 2
	upd := open
	upd.Kind, upd.Direction, upd.Start, upd.BytesReceived = bpf.KindUpdate, bpf.DirectionUnknown, time.Time{}, 300
	tr.BeginWalk(false)
	_, keep := tr.Observe(&upd)
	assert.False(t, keep, "not counted before its open")
	tr.EndWalk()
	o, keep := tr.Observe(&open)
	require.True(t, keep)
	assert.True(t, o.BecameOpen)
	assert.Equal(t, "checkout.shop.svc.cluster.local", o.Local.Service, "the local end resolved as the server")
	tr.BeginWalk(false)
	upd2 := upd
	o, _ = tr.Observe(&upd2)
	assert.Equal(t, bpf.DirectionInbound, upd2.Direction)
	assert.Equal(t, uint64(300), o.Delta.Received, "all of it, once")
	tr.EndWalk()

	// Its open record never comes: adopted at the second walk, all counted.
	lost := upd
	lost.ConnID = 77
	for i := range 2 {
		tr.BeginWalk(false)
		l := lost
		o, keep = tr.Observe(&l)
		assert.Equal(t, i == 1, keep, "walk %d", i)
		tr.EndWalk()
	}
	assert.Equal(t, uint64(300), o.Delta.Received)
	assert.True(t, o.BecameOpen)
}

// Retransmits by type are counted as they grow: each record adds what its
// types grew by since the connection's previous record (open, reports,
// close), so their sum is the close record's; a connection taken as a
// baseline at start counts from its baseline. The counts live beside the
// table only for connections that retransmitted, and leave with them.
func TestTrackerRetransmitsByTypeAsTheyGrow(t *testing.T) {
	type rt = [bpf.RetransmitTypes]uint32
	tr := New(identity.AddressOnly{}, true, false)
	feed := func(kind bpf.Kind, id uint64, types rt) rt {
		rec := &bpf.Record{Kind: kind, ConnID: id, Direction: bpf.DirectionOutbound, Start: t0, RetransmitsByType: types}
		for _, n := range types {
			rec.Retransmits += uint64(n)
		}
		o, keep := tr.Observe(rec)
		require.True(t, keep)
		return o.RetransmitsByType
	}
	assert.Equal(t, rt{bpf.RetransmitSYN: 1}, feed(bpf.KindOpen, 1, rt{bpf.RetransmitSYN: 1}), "at the open")
	assert.Equal(t, rt{bpf.RetransmitFast: 4}, feed(bpf.KindUpdate, 1, rt{bpf.RetransmitSYN: 1, bpf.RetransmitFast: 4}), "a report: what grew")
	assert.Zero(t, feed(bpf.KindUpdate, 1, rt{bpf.RetransmitSYN: 1, bpf.RetransmitFast: 4}), "nothing grew")
	assert.Equal(t, rt{bpf.RetransmitTimeout: 2, bpf.RetransmitFast: 1},
		feed(bpf.KindClose, 1, rt{bpf.RetransmitSYN: 1, bpf.RetransmitTimeout: 2, bpf.RetransmitFast: 5}), "the close: the rest")
	assert.Empty(t, tr.typed, "forgotten at its close")

	assert.Zero(t, feed(bpf.KindOpen, 2, rt{}))
	assert.Empty(t, tr.typed, "a connection that never retransmitted takes no room")
	assert.Equal(t, rt{bpf.RetransmitTailLossProbe: 1}, feed(bpf.KindClose, 2, rt{bpf.RetransmitTailLossProbe: 1}), "retransmitted after its last report")

	tr.BeginWalk(true)
	assert.Zero(t, feed(bpf.KindUpdate, 3, rt{bpf.RetransmitFast: 7}), "baselined at start")
	tr.EndWalk()
	assert.Equal(t, rt{bpf.RetransmitFast: 2}, feed(bpf.KindClose, 3, rt{bpf.RetransmitFast: 9}), "counted from its baseline")

	// One that leaves unseen (its close lost) or at the table's bound
	// takes its counts along.
	feed(bpf.KindUpdate, 4, rt{bpf.RetransmitFast: 1})
	for range 2 {
		tr.BeginWalk(false)
		tr.EndWalk()
	}
	assert.Empty(t, tr.typed, "a lost close")
	tr.SetLimit(1)
	feed(bpf.KindOpen, 5, rt{bpf.RetransmitSYN: 1})
	feed(bpf.KindOpen, 6, rt{})
	assert.Empty(t, tr.typed, "evicted")
}

// The reader applies records from the ring buffer while a walk runs, the
// start-up walk too: a connection that opens and closes meanwhile is the
// probe's own, counted in full and never set aside, and the close of one
// that closed before the walk reached it is counted as after the walk.
func TestRecordsReadDuringTheStartUpWalkAreNotItsBaseline(t *testing.T) {
	byType := [bpf.RetransmitTypes]uint32{bpf.RetransmitFast: 2}
	for _, adopt := range []bool{true, false} {
		tr := New(identity.AddressOnly{}, adopt, false)
		tr.BeginWalk(true)
		o, keep := tr.Observe(&bpf.Record{Kind: bpf.KindOpen, ConnID: 1, Direction: bpf.DirectionOutbound, Start: t0, Time: t0})
		require.True(t, keep, "adopt_existing %v", adopt)
		assert.True(t, o.BecameOpen)
		o, keep = tr.Observe(&bpf.Record{Kind: bpf.KindClose, ConnID: 1, BytesSent: 900, Retransmits: 2, RetransmitsByType: byType, Time: t0.Add(time.Second)})
		require.True(t, keep)
		assert.True(t, o.WasOpen)
		assert.Equal(t, uint64(900), o.Delta.Sent)
		assert.Equal(t, byType, o.RetransmitsByType, "all of its traffic counted")

		o, keep = tr.Observe(&bpf.Record{Kind: bpf.KindClose, ConnID: 2, BytesSent: 500, Time: t0.Add(time.Second)})
		require.True(t, keep)
		assert.Equal(t, uint64(500), o.Delta.Sent)
		tr.EndWalk()
		assert.Zero(t, tr.Len(), "nothing left behind")
	}
}

// Connections that come and go reuse the states of those gone: the table
// holds as many as were ever open at once, and a state given up keeps
// nothing of its connection.
func TestStatesReusedAfterClose(t *testing.T) {
	tr := New(fixedResolver(), true, false)
	for i := range 1000 {
		for id := range uint64(3) {
			_, keep := tr.Observe(&bpf.Record{Kind: bpf.KindOpen, ConnID: uint64(i)*3 + id + 1, Direction: bpf.DirectionOutbound, Start: t0, LocalAddr: fixture.ClientAddr, PeerAddr: fixture.ServerAddr})
			require.True(t, keep)
		}
		for id := range uint64(3) {
			tr.Observe(&bpf.Record{Kind: bpf.KindClose, ConnID: uint64(i)*3 + id + 1})
		}
	}
	assert.Zero(t, tr.Len())
	assert.Len(t, tr.conns.states, 3, "three open at once at most")
	for slot, st := range tr.conns.states {
		assert.Zero(t, st, "nothing kept of a closed connection")
		assert.Zero(t, tr.conns.ids[slot])
	}
}
