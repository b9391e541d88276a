package aggregate

import (
	"time"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

// Values are one series' counts: events, the open count (which moves both
// ways) and the traffic of its connections.
type Values struct {
	Opened, Closed, Failed uint64
	Open                   int64
	conntable.Counters
	// ResetsReceived and ResetsSent count the closes by a reset, by the
	// end that sent it (bpf.Record.CloseCause); Refused the connects the
	// local end refused for want of a listener (AddRefused).
	ResetsReceived, ResetsSent, Refused uint64
	// RetransmitsByType: retransmits by type, as the records of the
	// series' connections grew them (conntable.Observation.RetransmitsByType).
	RetransmitsByType [bpf.RetransmitTypes]uint64
	// ListenOverflows and ListenDrops: the local network namespace's
	// listener counters (AddListen).
	ListenOverflows, ListenDrops uint64
}

// Sub is v - w: what was counted since w.
func (v Values) Sub(w Values) Values {
	d := Values{v.Opened - w.Opened, v.Closed - w.Closed, v.Failed - w.Failed, v.Open - w.Open, v.Counters.Sub(w.Counters),
		v.ResetsReceived - w.ResetsReceived, v.ResetsSent - w.ResetsSent, v.Refused - w.Refused, v.RetransmitsByType,
		v.ListenOverflows - w.ListenOverflows, v.ListenDrops - w.ListenDrops}
	for i := range d.RetransmitsByType {
		d.RetransmitsByType[i] -= w.RetransmitsByType[i]
	}
	return d
}

// Series is one attribute set's state between flushes. The emitter owns
// Flushed and Emitted (its temporality bookkeeping) and resets histograms
// it reports as deltas.
type Series struct {
	Start    time.Time // first seen; a series that expired starts again
	LastSeen time.Time
	Flushed  time.Time // last emitted
	V        Values
	Emitted  Values // what the previous flush reported
	Duration Histogram
	RTT      Histogram
	// Handshake: handshake durations, observed at open.
	Handshake Histogram
}

// Histogram counts observations in fixed buckets (seconds).
type Histogram struct {
	Counts []uint64
	Sum    float64
	Count  uint64
}

func (h *Histogram) observe(bounds []float64, v float64) {
	if h.Counts == nil {
		h.Counts = make([]uint64, len(bounds)+1)
	}
	i := 0
	for i < len(bounds) && v > bounds[i] {
		i++
	}
	h.Counts[i]++
	h.Sum += v
	h.Count++
}

// Reset empties h, keeping its buckets.
func (h *Histogram) Reset() {
	clear(h.Counts)
	h.Sum, h.Count = 0, 0
}

// Bucket bounds, in seconds.
var (
	DurationBounds = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600}
	// HandshakeBounds reach past the SYN retransmissions (1 s, then 3 s
	// and 7 s from the connect).
	HandshakeBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32}
	RTTBounds       = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
)
