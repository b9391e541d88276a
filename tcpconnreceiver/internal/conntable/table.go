package conntable

import (
	"math"
	"net/netip"
	"time"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/natlookup"
)

// MaxConns bounds the table. Entries leave at close, or after two report
// walks without them; the bound matters only when reports are off and
// close records were lost. Reaching it clears the table (counted, see
// Table.Evicted).
const MaxConns = 1 << 20

// connState is what the table remembers of one live connection. The
// probe sends start, direction and process with the open record only: the
// connection's later records get them from here.
type connState struct {
	conn    Conn
	counted Counters
	startNs int64 // Unix nanoseconds; 0 when unknown
	// handshakeUs: how long the handshake took (bpf.Record.Handshake), in
	// microseconds: 32 bits keep connState within maxConnState.
	handshakeUs uint32
	comm        [16]byte
	lastWalk    uint32
	pid         uint32
	dir         bpf.Direction
	missed      uint8
	open        bool
	// adopted: the table did not see the connection open.
	adopted bool
	// connected: a report said the local end is the client
	// (bpf.FlagConnected), though the direction is unknown.
	connected bool
	// baselined: counted holds what the connection had carried before the
	// receiver started, taken as its baseline rather than counted.
	baselined bool
	// ignored: open before the receiver started, with adopt_existing off.
	ignored bool
	// pending: a report walk met the connection before its open record,
	// which is most likely still queued: nothing is counted until it
	// arrives (with the direction the walk cannot tell), or until the next
	// walk, which adopts the connection.
	pending bool
	// translated: the node translated the address the connection dialled
	// (a Service's); conn.PeerAddr and PeerPort are the backend reached.
	translated bool
	// typed: Table.typed holds the connection's retransmits by type
	// already counted.
	typed bool
}

// maxConnState: two cache lines. A report walk reads the state of every
// open connection, in the kernel's order: each costs its lines. (Hence the
// retransmits by type counted so far live in Table.typed, for the few
// connections that retransmit, rather than here: five more counters would
// take every entry past it.)
const maxConnState = 128

// learn takes what rec knows of how the connection began.
func (st *connState) learn(rec *bpf.Record) {
	st.startNs = 0
	if !rec.Start.IsZero() {
		st.startNs = rec.Start.UnixNano()
	}
	st.dir, st.pid, st.comm = rec.Direction, rec.PID, rec.Comm
	st.handshakeUs = uint32(min(rec.Handshake.Microseconds(), math.MaxUint32))
	st.connected = rec.Flags&bpf.FlagConnected != 0
	st.adopted = rec.Flags&bpf.FlagAdopted != 0
}

// complete gives rec what the connection's open record said.
func (st *connState) complete(rec *bpf.Record) {
	if rec.Start.IsZero() && st.startNs != 0 {
		rec.Start = time.Unix(0, st.startNs)
	}
	rec.SetDirection(st.dir)
	if rec.Flags&bpf.FlagConnected != 0 {
		st.connected = true
	} else if st.connected && rec.Direction == bpf.DirectionUnknown {
		rec.SetClient() // a close: its port is released by then
	}
	if rec.Handshake == 0 {
		rec.Handshake = time.Duration(st.handshakeUs) * time.Microsecond
	}
	if rec.PID == 0 {
		rec.PID, rec.Comm = st.pid, st.comm
	}
	if st.adopted {
		rec.Flags |= bpf.FlagAdopted
	}
}

var unresolved = &identity.Identity{}

// Table keeps, per connection, the identity of both ends (resolved once,
// against the time the connection started) and the counters already
// reported. It is owned by one goroutine, the receiver's reader.
type Table struct {
	resolver   identity.Resolver
	backends   identity.BackendResolver
	nat        natlookup.Lookup
	local      identity.LocalResolver
	natLookups int64
	natErrors  int64
	natLastErr error
	conns      slots
	// typed: the retransmits by type counted so far, of the connections
	// whose records carried any (connState.typed), so that each record
	// adds what its types grew by since the last. Most connections never
	// retransmit: they cost nothing here.
	typed map[uint64]retransmits
	// locals: the connections on this node by their local address and
	// port, so that a peer the resolver does not know (a pod whose address
	// the API server has not published yet) is named as the socket at its
	// end, when that socket is one of ours (see mirror). Cleared at each
	// walk, whose records put the live connections back, so it holds at
	// most what opened between two walks besides them; an entry whose
	// connection left is checked at use.
	locals        map[netip.AddrPort]uint64
	countAdopted  bool
	adoptExisting bool
	walk          uint32
	baseline      bool
	limit         int
	evicted       int64
	evictedOpen   []Conn
	lost          int64
}

// New returns an empty table. adoptExisting tracks the connections that
// the start-up walk finds open; countAdopted counts what they carried
// before the start as new traffic.
func New(r identity.Resolver, adoptExisting, countAdopted bool) *Table {
	t := &Table{resolver: r, conns: slots{index: map[uint64]int32{}}, typed: map[uint64]retransmits{}, locals: map[netip.AddrPort]uint64{}, adoptExisting: adoptExisting, countAdopted: countAdopted, limit: MaxConns}
	t.backends, _ = r.(identity.BackendResolver)
	return t
}

// SetNAT has the table ask l, once per connection, where a connection to
// a Service's virtual address (a peer the resolver marks Virtual) really
// went: the peer then becomes the backend reached, with the Service kept
// as its destination service. nil turns it off.
func (t *Table) SetNAT(l natlookup.Lookup) { t.nat = l }

// SetLocal has the table resolve each connection's local end by its
// socket's network namespace first (rec.NetNS), by its address only when
// l knows nothing of the namespace. nil turns it off.
func (t *Table) SetLocal(l identity.LocalResolver) { t.local = l }

// Observe accounts rec against its connection's state, and completes rec
// with what the connection's earlier records said. keep is false for
// records of connections that are left alone.
func (t *Table) Observe(rec *bpf.Record) (o Observation, keep bool) {
	slot, known := t.conns.index[rec.ConnID]
	if rec.ConnID == 0 {
		known = false
	}
	var st connState
	if known {
		st = t.conns.states[slot]
	}
	cur := CountersOf(rec)
	begins := rec.Kind == bpf.KindOpen || rec.Kind == bpf.KindFailure
	// The start-up walk sets aside, or takes as a baseline, what it
	// reports only: the reader applies records from the ring buffer while
	// a walk runs, and those are the probe's own, of connections that
	// opened or closed under it.
	baseline := t.baseline && rec.Kind == bpf.KindUpdate

	wasPending := false
	if known && st.pending && (begins || rec.Kind == bpf.KindClose || t.walk != st.lastWalk) {
		// Its open record arrived (or never will: a second walk, a close):
		// the connection starts from here as one never seen.
		t.forget(rec.ConnID, slot, &st)
		st, known, wasPending = connState{}, false, true
	}

	if known && st.ignored && begins {
		// Set aside by the start-up walk, but its open record was still
		// queued: it opened under the probe, and is tracked after all.
		t.forget(rec.ConnID, slot, &st)
		st, known = connState{}, false
	}

	// The retransmits by type counted so far: reset, or taken as a
	// baseline, below wherever counted is; retyped once they are no
	// longer what Table.typed holds. (No array comparisons: they cost a
	// call each, on every record.)
	var typed retransmits
	retyped := false
	if st.typed {
		typed = t.typed[rec.ConnID]
	}
	switch {
	case known && st.ignored:
		if rec.Kind == bpf.KindClose || rec.Kind == bpf.KindFailure {
			t.forget(rec.ConnID, slot, &st)
		} else if rec.Kind == bpf.KindUpdate {
			st.lastWalk, st.missed = t.walk, 0
			t.conns.states[slot] = st
		}
		return o, false
	case !known && baseline && !t.adoptExisting:
		// Open before the receiver started: left alone to its close.
		if rec.ConnID != 0 { // no id, nothing to find it by
			t.conns.add(rec.ConnID, connState{ignored: true, lastWalk: t.walk})
		}
		return o, false
	case known && st.pending:
		return o, false // the same walk again (a namespace seen twice)
	case !known && rec.Kind == bpf.KindUpdate && rec.Direction == bpf.DirectionUnknown && !baseline && rec.ConnID != 0 && !wasPending:
		// A periodic walk met a connection it does not know, and cannot
		// tell its direction: its open record is most likely still
		// queued. Wait for it, so that the connection is labelled with
		// its direction from the start.
		t.conns.add(rec.ConnID, connState{pending: true, lastWalk: t.walk})
		return o, false
	case !known:
		if !begins && rec.Start.IsZero() {
			// Never seen open: how it began is unknown.
			rec.Flags |= bpf.FlagAdopted
		}
		st.learn(rec)
		local, peer := t.resolve(rec, nil, nil)
		st.conn = ConnOf(rec, local, peer)
		t.translate(rec, &st)
		if baseline && !t.countAdopted {
			// Bytes that flowed before the receiver started are not new,
			// nor are retransmits.
			st.counted, st.baselined = cur, true
			typed = retransmits(rec.RetransmitsByType)
			retyped = typed.any()
		}
	case begins:
		switch {
		case !st.adopted:
			// A second open under one id: a raw_tp id used again by a
			// new connection after the old one's close was lost.
			st.counted, typed, retyped = Counters{}, retransmits{}, st.typed
		case st.baselined:
			// A walk saw it before its queued open record, and it was the
			// start-up walk: the connection opened after the probe
			// started, so what that walk took as its baseline is new
			// traffic after all.
			st.counted, st.baselined, typed, retyped = Counters{}, false, retransmits{}, st.typed
		}
		// Otherwise a walk saw it before its queued open record and
		// counted what it carried then; the record says how it began.
		st.learn(rec)
	default:
		st.complete(rec)
		cur = CountersOf(rec) // the direction may take the SYN out of BytesSent
		if st.conn.Local == unresolved || st.conn.Peer == unresolved {
			wasUnresolved := st.conn.Peer == unresolved
			st.conn.Local, st.conn.Peer = t.resolve(rec, st.conn.Local, st.conn.Peer)
			if wasUnresolved {
				t.translate(rec, &st)
			}
		}
	}
	o = Observation{Local: st.conn.Local, Peer: st.conn.Peer, Delta: cur.Sub(st.counted)}
	if st.translated {
		// Every record names the socket's peer, the address dialled.
		o.Dialled = netip.AddrPortFrom(rec.PeerAddr, rec.PeerPort)
		rec.PeerAddr, rec.PeerPort = st.conn.PeerAddr, st.conn.PeerPort
	}
	st.counted = st.counted.Max(cur)
	o.RetransmitsByType, retyped = typed.grow(&rec.RetransmitsByType, retyped)

	switch rec.Kind {
	case bpf.KindClose, bpf.KindFailure:
		o.WasOpen = st.open
		if known {
			t.forget(rec.ConnID, slot, &st)
		}
		return o, true
	case bpf.KindUpdate:
		st.lastWalk, st.missed = t.walk, 0
	}
	if !st.open {
		st.open, o.BecameOpen = true, true
	}
	if rec.ConnID != 0 && (!known || rec.Kind == bpf.KindUpdate) && st.conn.Local != unresolved && !rec.LocalAddr.IsLoopback() {
		t.locals[netip.AddrPortFrom(rec.LocalAddr, rec.LocalPort)] = rec.ConnID
	}
	switch {
	case known:
		if retyped {
			t.typed[rec.ConnID], st.typed = typed, true
		}
		t.conns.states[slot] = st
	case rec.ConnID != 0:
		if len(t.conns.index) >= t.limit {
			t.evict()
		}
		if retyped {
			t.typed[rec.ConnID], st.typed = typed, true
		}
		t.conns.add(rec.ConnID, st)
	}
	return o, true
}

// evict empties the table, which is full: only reachable when close
// records were lost and no report walk removes their connections. The
// open ones are kept in evictedOpen for the open count to follow.
func (t *Table) evict() {
	for _, slot := range t.conns.index {
		if st := &t.conns.states[slot]; st.open {
			t.evictedOpen = append(t.evictedOpen, st.conn)
		}
	}
	t.evicted += int64(len(t.conns.index))
	t.conns.clear()
	clear(t.typed)
	clear(t.locals)
}

// forget removes a connection's entry, at slot, with its retransmits by
// type.
func (t *Table) forget(id uint64, slot int32, st *connState) {
	if st.typed { // before remove, which clears the slot st may point at
		delete(t.typed, id)
	}
	t.conns.remove(id, slot)
}

// retransmits are a connection's retransmits by type, as its records
// carry them (bpf.Record.RetransmitsByType): cumulative.
type retransmits [bpf.RetransmitTypes]uint32

// any says whether r counts any retransmit.
func (r *retransmits) any() bool {
	for _, n := range r {
		if n > 0 {
			return true
		}
	}
	return false
}

// grow returns what cur adds to the retransmits by type already counted,
// r, per type (counts only grow, as Counters.Sub), and takes cur's into r;
// changed comes back true if r changed, or if it was.
func (r *retransmits) grow(cur *[bpf.RetransmitTypes]uint32, changed bool) (d [bpf.RetransmitTypes]uint32, _ bool) {
	for i, n := range cur {
		if n > r[i] {
			d[i] = n - r[i]
			r[i] = n
			changed = true
		}
	}
	return d, changed
}

// TakeEvicted returns the open connections evicted since the last call.
func (t *Table) TakeEvicted() []Conn {
	gone := t.evictedOpen
	t.evictedOpen = nil
	return gone
}

// Evicted counts the connections dropped at the table's bound.
func (t *Table) Evicted() int64 { return t.evicted }

// Lost counts the connections whose close record never arrived.
func (t *Table) Lost() int64 { return t.lost }

// resolve fills the ends still unknown.
func (t *Table) resolve(rec *bpf.Record, local, peer *identity.Identity) (*identity.Identity, *identity.Identity) {
	at := began(rec)
	localRole, peerRole := identity.RoleClient, identity.RoleServer
	if rec.Direction == bpf.DirectionInbound {
		localRole, peerRole = identity.RoleServer, identity.RoleClient
	}
	if local == nil || local == unresolved {
		var id *identity.Identity
		if t.local != nil {
			id = t.local.ResolveLocal(uint64(rec.NetNS), rec.LocalAddr, rec.LocalPort, at, localRole)
		}
		if id == nil {
			id = t.resolver.Resolve(rec.LocalAddr, rec.LocalPort, at, localRole)
		}
		local = orUnresolved(id)
	}
	if peer == nil || peer == unresolved {
		id := t.resolver.Resolve(rec.PeerAddr, rec.PeerPort, at, peerRole)
		if id == nil {
			id = t.mirror(rec)
		}
		peer = orUnresolved(id)
	}
	return local, peer
}

// mirror is the local end of the connection's other socket when that
// socket is on this node too and its own end is named (by its network
// namespace, which needs no API server): the socket whose local address
// and port are rec's peer and whose peer is rec's local end (after the
// node's translation, for a client that dialled a ClusterIP).
func (t *Table) mirror(rec *bpf.Record) *identity.Identity {
	id, ok := t.locals[netip.AddrPortFrom(rec.PeerAddr, rec.PeerPort)]
	if !ok || id == rec.ConnID {
		return nil
	}
	slot, ok := t.conns.index[id]
	if !ok {
		return nil
	}
	other := &t.conns.states[slot].conn
	if other.Local == nil || other.Local == unresolved || other.PeerAddr != rec.LocalAddr || other.PeerPort != rec.LocalPort {
		return nil
	}
	return other.Local
}

// began is when rec's connection started, for resolving its ends as they
// were then: its event time when the start is unknown.
func began(rec *bpf.Record) time.Time {
	if rec.Start.IsZero() {
		return rec.Time
	}
	return rec.Start
}

// RefusedConn describes the server end at local that refused connects
// (no connection, no peer known), resolved as of at.
func (t *Table) RefusedConn(local netip.Addr, at time.Time) Conn {
	c := t.ListenerConn(local, at)
	c.IPv6 = local.Is6() && !local.Is4In6()
	return c
}

// ListenerConn is the series of a network namespace's listener counters:
// the pod its address names as the server, peer unknown. Always IPv4: the
// counters are the namespace's, not a family's, so that one pod has one
// series.
func (t *Table) ListenerConn(local netip.Addr, at time.Time) Conn {
	return Conn{Local: orUnresolved(t.resolver.Resolve(local, 0, at, identity.RoleServer)), Peer: unresolved, Direction: bpf.DirectionInbound}
}

// translate asks, once, where a connection to a Service's virtual address
// went: the peer becomes the backend the node translated it to.
func (t *Table) translate(rec *bpf.Record, st *connState) {
	if t.nat == nil || st.translated || !st.conn.Peer.Virtual || rec.Direction == bpf.DirectionInbound {
		return
	}
	t.natLookups++
	reached, ok, err := t.nat.Reached(netip.AddrPortFrom(rec.LocalAddr, rec.LocalPort), netip.AddrPortFrom(rec.PeerAddr, rec.PeerPort))
	if err != nil {
		t.natErrors++
		t.natLastErr = err
		return
	}
	if !ok {
		return
	}
	st.translated = true
	st.conn.PeerAddr, st.conn.PeerPort = reached.Addr(), reached.Port()
	if t.backends == nil {
		return
	}
	if id := t.backends.ResolveBackend(st.conn.Peer, reached.Addr(), reached.Port(), began(rec)); id != nil {
		st.conn.Peer = id
	}
}

// NATStats counts the conntrack lookups made, those that failed, and the
// last failure's error.
func (t *Table) NATStats() (lookups, failed int64, last error) {
	return t.natLookups, t.natErrors, t.natLastErr
}

func orUnresolved(id *identity.Identity) *identity.Identity {
	if id == nil {
		return unresolved
	}
	return id
}

// BeginWalk starts a report walk; baseline marks the start-up walk, which
// takes the counters of the connections open before the receiver started
// as their baseline (or leaves them alone, when not adopting them). Until
// EndWalk, the walk's update records may come between records from the
// ring buffer: a connection's update must come before its close (see
// bpf.Probe.Walk), an open may come either side of it.
func (t *Table) BeginWalk(baseline bool) {
	clear(t.locals)
	t.walk++
	t.baseline = baseline
}

// EndWalk removes connections that two walks in a row did not see: their
// close record was lost. It returns the open ones so the open count can
// follow. A connection that is closing is skipped by one walk at most, as
// its close record is read before the next walk.
func (t *Table) EndWalk() []Conn {
	t.baseline = false
	var gone []Conn
	// In the order the states lie, not the index's: a walk's worth of
	// them, read from end to end.
	for slot := range t.conns.states {
		id, st := t.conns.ids[slot], &t.conns.states[slot]
		if id == 0 || st.lastWalk == t.walk {
			continue
		}
		st.missed++
		if st.missed < 2 {
			continue
		}
		t.lost++
		if st.open {
			gone = append(gone, st.conn)
		}
		t.forget(id, int32(slot), st)
	}
	return gone
}

// Len is the number of connections in the table.
func (t *Table) Len() int { return len(t.conns.index) }

// slots holds the table's connections: an index by id into states, which
// are updated where they lie. A map of the states themselves (128 bytes
// each) was 27 MB at 100k connections (both ends), and every record of a
// walk cost a lookup that missed the cache and a second one to store the
// state back; the index is a tenth of that.
type slots struct {
	index  map[uint64]int32
	states []connState
	// ids: the id of each state's connection, 0 where none holds it.
	ids []uint64
	// free lists the states no connection holds, for the next to come.
	free []int32
}

// add gives id a state: a free one, or one more.
func (s *slots) add(id uint64, st connState) {
	var slot int32
	if n := len(s.free); n > 0 {
		slot, s.free = s.free[n-1], s.free[:n-1]
		s.states[slot], s.ids[slot] = st, id
	} else {
		slot = int32(len(s.states))
		s.states, s.ids = append(s.states, st), append(s.ids, id)
	}
	s.index[id] = slot
}

// remove frees id's state, at slot.
func (s *slots) remove(id uint64, slot int32) {
	delete(s.index, id)
	s.states[slot], s.ids[slot] = connState{}, 0 // its identities may go
	s.free = append(s.free, slot)
}

// clear frees every state; the memory stays for the connections to come.
func (s *slots) clear() {
	clear(s.index)
	clear(s.states)
	s.states, s.ids, s.free = s.states[:0], s.ids[:0], s.free[:0]
}

// SetLimit bounds the table below MaxConns (tests of a full table).
func (t *Table) SetLimit(n int) { t.limit = n }
