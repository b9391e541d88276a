package aggregate

import (
	"time"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

// ViewKind names a family of series.
type ViewKind uint8

// View kinds.
const (
	// ViewWorkload: local workload x peer workload x direction.
	ViewWorkload ViewKind = iota + 1
	// ViewService: per destination service.
	ViewService
	// ViewCrossZone: local workload x peer workload x peer zone, for
	// connections whose ends are in different zones (ViewSpec.Keep).
	ViewCrossZone
)

// String returns "workload" or "service", the view attribute's values.
func (v ViewKind) String() string {
	switch v {
	case ViewWorkload:
		return "workload"
	case ViewService:
		return "service"
	case ViewCrossZone:
		return "cross_zone"
	}
	return "unknown"
}

// ViewSpec is what a profile asks of one view.
type ViewSpec struct {
	Kind    ViewKind
	Project Project
	// Histograms observes duration and RTT at every close.
	Histograms bool
	// PeerAddr and PeerPort fill the key's opt-in peer attributes.
	PeerAddr, PeerPort bool
	// Keep, when set, chooses the connections the view counts; the
	// others have no series in it.
	Keep func(c *conntable.Conn) bool
}

// View is one family of series with its own cardinality bound and
// overflow series.
type View struct {
	ViewSpec
	series map[Key]*Series
	// memo: the series of the connections seen since the last Collect
	// (Aggregator.seriesOf).
	memo  map[memoKey]memo
	limit int
	// overflowed counts records routed to the overflow series.
	overflowed int64
	scratch    Key
}

// Overflowed counts the records routed to the view's overflow series.
func (v *View) Overflowed() int64 { return v.overflowed }

// Range calls fn for every series of the view.
func (v *View) Range(fn func(k *Key, s *Series)) {
	for k, s := range v.series {
		fn(&k, s)
	}
}

// get returns the series of key k, creating it (or the overflow series
// when the view is full).
func (v *View) get(k *Key, now time.Time) *Series {
	if s := v.series[*k]; s != nil {
		s.LastSeen = now
		return s
	}
	if len(v.series) >= v.limit {
		v.overflowed++
		if s := v.series[overflowKey]; s != nil {
			s.LastSeen = now
			return s
		}
		k = &overflowKey
	}
	s := &Series{Start: now, LastSeen: now}
	v.series[*k] = s
	return s
}

// expire drops series not seen since cutoff that hold no open connection:
// a series that comes back starts again with a new start time.
func (v *View) expire(cutoff time.Time) {
	for k, s := range v.series {
		if s.LastSeen.Before(cutoff) && s.V.Open == 0 {
			delete(v.series, k)
		}
	}
}
