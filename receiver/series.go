package receiver

import (
	"net/netip"
	"time"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// endLabels are the identity fields of one end that some profile puts on
// its metrics. A view fills only those it uses, so ends that differ in
// nothing it reports share its series.
type endLabels struct {
	workload, kind, namespace, principal, app, version string
	canonicalService, canonicalRevision, cluster       string
	pod, podUID, podAddress                            string
}

// seriesKey identifies one series of one view. Strings are the resolver's
// shared values or constants, so building a key does not allocate.
type seriesKey struct {
	direction   metadata.AttributeDirection
	networkType metadata.AttributeNetworkType
	errorType   metadata.AttributeErrorType // set on failure series only
	local, peer endLabels
	// The destination service (the server end's).
	svcHost, svcName, svcNamespace string
	// Opt-in otel attributes: the peer's address and port.
	peerAddress string
	peerPort    uint16
}

// values are one series' counters; open moves both ways.
type values struct {
	opened, closed, failed, open, sent, received, retrans, lost int64
}

func (v values) sub(w values) values {
	return values{v.opened - w.opened, v.closed - w.closed, v.failed - w.failed, v.open - w.open,
		v.sent - w.sent, v.received - w.received, v.retrans - w.retrans, v.lost - w.lost}
}

// series is one attribute set's state between flushes.
type series struct {
	start    time.Time // first seen; a series that expired starts again
	lastSeen time.Time
	flushed  time.Time // last emitted, for delta start times
	v        values
	emitted  values // what the previous flush reported, for delta
	duration histogram
	rtt      histogram
}

// connRef is what a view needs to place a connection in its series.
type connRef struct {
	direction   bpf.Direction
	ipv6        bool
	local, peer *identity.Identity
	peerAddr    netip.Addr
	peerPort    uint16
}

func refOf(rec *bpf.Record, local, peer *identity.Identity) connRef {
	return connRef{direction: rec.Direction, ipv6: rec.LocalAddr.Is6() && !rec.LocalAddr.Is4In6(), local: local, peer: peer,
		peerAddr: rec.PeerAddr, peerPort: rec.PeerPort}
}

// server is the end that accepted: the destination in Istio's terms.
func (c *connRef) server() *identity.Identity {
	if c.direction == bpf.DirectionInbound {
		return c.local
	}
	return c.peer
}

// client is the end that connected: the source in Istio's terms.
func (c *connRef) client() *identity.Identity {
	if c.direction == bpf.DirectionInbound {
		return c.peer
	}
	return c.local
}

// view is one family of series (workload or service) with its own
// cardinality bound and overflow series.
type view struct {
	kind    metadata.AttributeView
	project func(c *connRef, errType metadata.AttributeErrorType, k *seriesKey)
	series  map[seriesKey]*series
	limit   int
	// overflowed counts records routed to the overflow series.
	overflowed int64
	scratch    seriesKey
}

// overflowKey is where records go once a view has limit series: every
// label reads "overflow".
var overflowKey = func() seriesKey {
	o := "overflow"
	end := endLabels{o, o, o, o, o, o, o, o, o, o, o, o}
	return seriesKey{direction: metadata.AttributeDirectionUnknown, networkType: metadata.AttributeNetworkTypeIpv4,
		local: end, peer: end, svcHost: o, svcName: o, svcNamespace: o}
}()

// get returns the series of key k, creating it (or the overflow series
// when the view is full).
func (v *view) get(k *seriesKey, now time.Time) *series {
	if s := v.series[*k]; s != nil {
		s.lastSeen = now
		return s
	}
	if len(v.series) >= v.limit {
		v.overflowed++
		if s := v.series[overflowKey]; s != nil {
			s.lastSeen = now
			return s
		}
		k = &overflowKey
	}
	s := &series{start: now, lastSeen: now}
	v.series[*k] = s
	return s
}

// expire drops series not seen since cutoff that hold no open connection:
// a series that comes back starts again with a new start time.
func (v *view) expire(cutoff time.Time) {
	for k, s := range v.series {
		if s.lastSeen.Before(cutoff) && s.v.open == 0 {
			delete(v.series, k)
		}
	}
}

// histogram counts observations in fixed buckets (seconds).
type histogram struct {
	counts []uint64
	sum    float64
	count  uint64
}

func (h *histogram) observe(bounds []float64, v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
	}
	i := 0
	for i < len(bounds) && v > bounds[i] {
		i++
	}
	h.counts[i]++
	h.sum += v
	h.count++
}

// reset empties h, keeping its buckets.
func (h *histogram) reset() {
	clear(h.counts)
	h.sum, h.count = 0, 0
}

// Bucket bounds, in seconds.
var (
	durationBounds = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600}
	rttBounds      = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
)
