package receiver

import (
	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
)

// maxTrackedConns bounds the connection table. Entries leave at close, or
// after two report walks without them; the bound matters only when reports
// are off and close records were lost. Reaching it clears the table.
const maxTrackedConns = 1 << 20

// counters are the cumulative figures of a connection that have been
// counted in the metrics so far.
type counters struct {
	sent, received, retrans, lost uint64
}

func countersOf(rec *bpf.Record) counters {
	return counters{rec.BytesSent, rec.BytesReceived, rec.Retransmits, rec.Lost}
}

// sub is c - prev, clamped at zero per field: kernel counters only grow.
func (c counters) sub(prev counters) counters {
	d := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return counters{d(c.sent, prev.sent), d(c.received, prev.received), d(c.retrans, prev.retrans), d(c.lost, prev.lost)}
}

// connState is what the receiver remembers of one live connection.
type connState struct {
	ref      connRef
	counted  counters
	lastWalk uint64
	missed   uint8
	open     bool
}

// observation is what one record means for the metrics and the logs.
type observation struct {
	local, peer *identity.Identity
	// delta is what the record adds to the counters since the connection's
	// previous record: the sum over a connection's records is its total.
	delta counters
	// becameOpen / wasOpen move the open-connections count.
	becameOpen, wasOpen bool
}

var unresolved = &identity.Identity{}

// tracker keeps, per connection, the identity of both ends (resolved once,
// against the time the connection started) and the counters already
// reported. It is owned by the reader goroutine.
type tracker struct {
	resolver     identity.Resolver
	conns        map[uint64]connState
	countAdopted bool
	walk         uint64
	baseline     bool
	evicted      int64
	lost         int64
}

func newTracker(r identity.Resolver, countAdopted bool) *tracker {
	return &tracker{resolver: r, conns: map[uint64]connState{}, countAdopted: countAdopted}
}

// observe accounts rec against its connection's state.
func (t *tracker) observe(rec *bpf.Record) (o observation, keep bool) {
	st, known := t.conns[rec.ConnID]
	if rec.ConnID == 0 {
		known = false
	}
	if !known {
		if t.baseline && rec.Flags&bpf.FlagAdopted == 0 {
			// A connection opened under the probe during the start-up
			// walk: its open record is on its way and will count it.
			return o, false
		}
		local, peer := t.resolve(rec, nil, nil)
		st.ref = refOf(rec, local, peer)
		if rec.Kind == bpf.KindUpdate && rec.Flags&bpf.FlagAdopted != 0 && !t.countAdopted {
			// Bytes that flowed before the receiver started are not new.
			st.counted = countersOf(rec)
		}
	} else if st.ref.local == unresolved || st.ref.peer == unresolved {
		st.ref.local, st.ref.peer = t.resolve(rec, st.ref.local, st.ref.peer)
	}
	cur := countersOf(rec)
	o = observation{local: st.ref.local, peer: st.ref.peer, delta: cur.sub(st.counted)}
	st.counted = cur

	switch rec.Kind {
	case bpf.KindClose, bpf.KindFailure:
		o.wasOpen = st.open
		if known {
			delete(t.conns, rec.ConnID)
		}
		return o, true
	case bpf.KindUpdate:
		st.lastWalk, st.missed = t.walk, 0
	}
	if !st.open && rec.Kind != bpf.KindFailure {
		st.open, o.becameOpen = true, true
	}
	if rec.ConnID != 0 {
		if !known && len(t.conns) >= maxTrackedConns {
			t.evicted += int64(len(t.conns))
			clear(t.conns)
		}
		t.conns[rec.ConnID] = st
	}
	return o, true
}

// resolve fills the ends still unknown.
func (t *tracker) resolve(rec *bpf.Record, local, peer *identity.Identity) (*identity.Identity, *identity.Identity) {
	at := rec.Start
	if at.IsZero() {
		at = rec.Time
	}
	localRole, peerRole := identity.RoleClient, identity.RoleServer
	if rec.Direction == bpf.DirectionInbound {
		localRole, peerRole = identity.RoleServer, identity.RoleClient
	}
	if local == nil || local == unresolved {
		local = orUnresolved(t.resolver.Resolve(rec.LocalAddr, rec.LocalPort, at, localRole))
	}
	if peer == nil || peer == unresolved {
		peer = orUnresolved(t.resolver.Resolve(rec.PeerAddr, rec.PeerPort, at, peerRole))
	}
	return local, peer
}

func orUnresolved(id *identity.Identity) *identity.Identity {
	if id == nil {
		return unresolved
	}
	return id
}

// beginWalk starts a report walk; baseline marks the start-up walk, which
// only records adopted connections' counters.
func (t *tracker) beginWalk(baseline bool) {
	t.walk++
	t.baseline = baseline
}

// endWalk removes connections that two walks in a row did not see: their
// close record was lost. It returns their series so the open count can
// follow. A connection that is closing is skipped by one walk at most, as
// its close record is read before the next walk.
func (t *tracker) endWalk() []connRef {
	t.baseline = false
	var gone []connRef
	for id, st := range t.conns {
		if st.lastWalk == t.walk {
			continue
		}
		st.missed++
		if st.missed < 2 {
			t.conns[id] = st
			continue
		}
		delete(t.conns, id)
		t.lost++
		if st.open {
			gone = append(gone, st.ref)
		}
	}
	return gone
}
