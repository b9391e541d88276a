package aggregate

import (
	"net/netip"
	"sync"
	"time"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

// Limits bound the aggregator's memory.
type Limits struct {
	// Series is the most series per view; more go to its overflow series.
	Series int
	// Expiry drops series idle this long with no open connection; 0 keeps
	// them.
	Expiry time.Duration
}

// Aggregator keeps every view's series between flushes. The reader adds
// records, the flusher collects; one mutex is enough at one node's rates
// (see BenchmarkAggregate).
type Aggregator struct {
	mu     sync.Mutex
	views  []*View
	limits Limits
	conn   conntable.Conn
	addrs  map[netip.Addr]string
}

// New returns an aggregator with one view per spec.
func New(specs []ViewSpec, limits Limits) *Aggregator {
	a := &Aggregator{limits: limits, addrs: map[netip.Addr]string{}}
	for _, s := range specs {
		a.views = append(a.views, &View{ViewSpec: s, series: map[Key]*Series{}, memo: map[memoKey]memo{}, limit: limits.Series})
	}
	return a
}

// memoKey is what a connection's key in a view is made of: a projection
// reads the connection's ends, direction and family only (see Project),
// and the view may add the peer's address and port.
type memoKey struct {
	local, peer *identity.Identity
	addr        netip.Addr
	port        uint16
	dir         bpf.Direction
	ipv6        bool
	err         bpf.ErrorType
}

// memoPerSeries bounds a view's memo at this many entries per series of
// its limit.
const memoPerSeries = 4

// memo is where a memoKey's records go: the series, and whether each
// record there counts as overflow.
type memo struct {
	series   *Series
	overflow bool
}

// seriesOf returns the series of c in v, creating it (View.get), and
// counts the record as overflow where it goes to an overflow series or
// its peer address to "overflow". The answer is remembered by what the
// key is made of until the next Collect, the only place series go away:
// hashing the key's twenty labels at every record and view cost more
// than the rest of the record (the report walks, which bring every open
// connection at once, spent a third of their time there).
func (a *Aggregator) seriesOf(v *View, c *conntable.Conn, e bpf.ErrorType, now time.Time) *Series {
	mk := memoKey{local: c.Local, peer: c.Peer, dir: c.Direction, ipv6: c.IPv6, err: e}
	if v.PeerAddr {
		mk.addr = c.PeerAddr
	}
	if v.PeerPort {
		mk.port = c.PeerPort
	}
	if m, ok := v.memo[mk]; ok {
		m.series.LastSeen = now
		if m.overflow {
			v.overflowed++
		}
		return m.series
	}
	k := a.project(v, c, e)
	before := v.overflowed
	s := v.get(k, now)
	if k.PeerAddr == Overflow && v.PeerAddr && v.overflowed == before {
		// The address cache was full: the record went to a series whose
		// peer.address reads "overflow"; it is counted as overflow too.
		v.overflowed++
	}
	// Bounded: several keys share a series (a workload's pods), but a key
	// per connection (peer.port) would hold an entry per connection until
	// the next Collect.
	if len(v.memo) < memoPerSeries*v.limit {
		v.memo[mk] = memo{series: s, overflow: v.overflowed != before}
	}
	return s
}

// project fills the view's scratch key for a connection.
func (a *Aggregator) project(v *View, c *conntable.Conn, e bpf.ErrorType) *Key {
	k := &v.scratch
	*k = Key{}
	v.Project(c, e, k)
	if v.PeerAddr {
		k.PeerAddr = a.addrString(c.PeerAddr)
	}
	if v.PeerPort {
		k.PeerPort = c.PeerPort
	}
	return k
}

// addrString formats an address once; later series reuse the string.
func (a *Aggregator) addrString(ip netip.Addr) string {
	if !ip.IsValid() {
		return identity.OrUnknown("") // no peer: refused connects
	}
	if s, ok := a.addrs[ip]; ok {
		return s
	}
	if len(a.addrs) >= a.limits.Series {
		return Overflow
	}
	s := ip.String()
	a.addrs[ip] = s
	return s
}

// Add counts one record: its event, and what it adds to the connection's
// counters since its previous record (reports during its life, the rest
// at close), so the sum over a connection is exactly its total.
func (a *Aggregator) Add(rec *bpf.Record, o *conntable.Observation) {
	var e bpf.ErrorType
	if rec.Kind == bpf.KindFailure {
		e = rec.Error()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Scratch values under the lock: a key passed to a view's projection
	// through a function value would otherwise escape, once per record.
	c := &a.conn
	*c = conntable.ConnOf(rec, o.Local, o.Peer)
	for _, v := range a.views {
		if v.Keep != nil && !v.Keep(c) {
			continue
		}
		s := a.seriesOf(v, c, e, rec.Time)
		switch rec.Kind {
		case bpf.KindFailure:
			s.V.Failed++
			continue
		case bpf.KindOpen:
			s.V.Opened++
			if v.Histograms && rec.Handshake > 0 {
				s.Handshake.observe(HandshakeBounds, rec.Handshake.Seconds())
			}
		case bpf.KindClose:
			s.V.Closed++
			switch rec.CloseCause() {
			case bpf.CauseResetReceived:
				s.V.ResetsReceived++
			case bpf.CauseResetSent:
				s.V.ResetsSent++
			}
			if v.Histograms {
				if !rec.Start.IsZero() {
					s.Duration.observe(DurationBounds, rec.Duration().Seconds())
				}
				if rec.SRTT > 0 {
					s.RTT.observe(RTTBounds, rec.SRTT.Seconds())
				}
			}
		case bpf.KindUpdate:
			// A live connection's RTT at each report, not only at its
			// close.
			if v.Histograms && rec.SRTT > 0 {
				s.RTT.observe(RTTBounds, rec.SRTT.Seconds())
			}
		}
		if o.BecameOpen {
			s.V.Open++
		}
		if o.WasOpen {
			s.V.Open--
		}
		s.V.Counters = s.V.Counters.Add(o.Delta)
		for i, n := range o.RetransmitsByType {
			s.V.RetransmitsByType[i] += uint64(n)
		}
	}
}

// AddRefused counts n connects refused at c's local end (the probe saw
// the RSTs, no connection) in the workload views: the server's side of a
// refused connect.
func (a *Aggregator) AddRefused(c *conntable.Conn, n uint64, at time.Time) {
	a.addWorkload(c, at, func(v *Values) { v.Refused += n })
}

// AddListen counts a network namespace's listener overflows and drops in
// the workload views, in c's series (see conntable.Table.ListenerConn).
func (a *Aggregator) AddListen(c *conntable.Conn, overflows, drops uint64, at time.Time) {
	a.addWorkload(c, at, func(v *Values) {
		v.ListenOverflows += overflows
		v.ListenDrops += drops
	})
}

// addWorkload adds to c's series in every workload view (counts read at a
// walk, which belong to a pod, not to a connection).
func (a *Aggregator) addWorkload(c *conntable.Conn, at time.Time, add func(*Values)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range a.views {
		if v.Kind == ViewWorkload {
			add(&v.get(a.project(v, c, bpf.ErrorNone), at).V)
		}
	}
}

// Forget takes connections whose close was lost off the open counts.
func (a *Aggregator) Forget(conns []conntable.Conn) {
	if len(conns) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range conns {
		for _, v := range a.views {
			if v.Keep != nil && !v.Keep(&conns[i]) {
				continue
			}
			if s := v.series[*a.project(v, &conns[i], bpf.ErrorNone)]; s != nil {
				s.V.Open--
			}
		}
	}
}

// Collect expires idle series, then hands every view to fn under the
// aggregator's lock: fn reads the series and may update the emitter's
// bookkeeping in them, and must not keep them.
func (a *Aggregator) Collect(now time.Time, fn func(views []*View)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range a.views {
		// What it remembers may name series about to expire, or identities
		// the resolver has replaced since.
		clear(v.memo)
	}
	if a.limits.Expiry > 0 {
		for _, v := range a.views {
			v.expire(now.Add(-a.limits.Expiry))
		}
		a.pruneAddrs()
	}
	fn(a.views)
}

// pruneAddrs drops the cached address strings no series uses any more, so
// the cache follows the series' expiry instead of only growing.
func (a *Aggregator) pruneAddrs() {
	if len(a.addrs) == 0 {
		return
	}
	used := make(map[string]struct{}, len(a.addrs))
	for _, v := range a.views {
		if !v.PeerAddr {
			continue
		}
		for k := range v.series {
			used[k.PeerAddr] = struct{}{}
		}
	}
	for ip, s := range a.addrs {
		if _, ok := used[s]; !ok {
			delete(a.addrs, ip)
		}
	}
}

// Series returns how many series each view holds, in view order.
func (a *Aggregator) Series() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]int, len(a.views))
	for i, v := range a.views {
		out[i] = len(v.series)
	}
	return out
}
