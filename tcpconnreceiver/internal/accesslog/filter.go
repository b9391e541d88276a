package accesslog

import (
	"slices"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// Filter decides which access-log records are emitted. It holds no state
// across records: sampling is a hash of the connection id, so a
// connection's records are kept or dropped together.
type Filter struct {
	cfg       FilterConfig
	threshold uint64 // keep when hash(conn) < threshold
	sampleAll bool
}

// NewFilter returns the filter and sampling of cfg.
func NewFilter(cfg Config) Filter {
	f := Filter{cfg: cfg.Filter, sampleAll: cfg.SamplingRatio >= 1}
	if !f.sampleAll {
		f.threshold = uint64(cfg.SamplingRatio * (1 << 63) * 2)
	}
	return f
}

// isFailure is a failed handshake or a connection closed by a reset: such
// records are logged at WARN with their error, and sampling and the
// failures_only filter keep them.
func isFailure(rec *bpf.Record) bool { return rec.Error() != bpf.ErrorNone }

// Drop returns why a record is not logged, or false to log it.
func (f *Filter) Drop(rec *bpf.Record, o *conntable.Observation) (metadata.AttributeReason, bool) {
	failure := isFailure(rec)
	if f.cfg.FailuresOnly && !failure {
		return metadata.AttributeReasonFailuresOnly, true
	}
	if len(f.cfg.IncludeNamespaces) > 0 && !slices.Contains(f.cfg.IncludeNamespaces, o.Local.Namespace) &&
		!slices.Contains(f.cfg.IncludeNamespaces, o.Peer.Namespace) {
		return metadata.AttributeReasonNamespace, true
	}
	if len(f.cfg.ExcludeNamespaces) > 0 && (slices.Contains(f.cfg.ExcludeNamespaces, o.Local.Namespace) ||
		slices.Contains(f.cfg.ExcludeNamespaces, o.Peer.Namespace)) {
		return metadata.AttributeReasonNamespace, true
	}
	if !failure {
		if f.cfg.MinDuration > 0 && rec.Kind == bpf.KindClose && !rec.Start.IsZero() && rec.Duration() < f.cfg.MinDuration {
			return metadata.AttributeReasonMinDuration, true
		}
		if f.cfg.MinBytes > 0 && (rec.Kind == bpf.KindClose || rec.Kind == bpf.KindUpdate) &&
			rec.BytesSent+rec.BytesReceived < f.cfg.MinBytes {
			return metadata.AttributeReasonMinBytes, true
		}
		if !f.sampleAll && mix(rec.ConnID) >= f.threshold {
			return metadata.AttributeReasonSampling, true
		}
	}
	return 0, false
}

// mix is splitmix64's finaliser: connection ids are sequential per CPU,
// their hashes uniform.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
