package receiver

import (
	"slices"
	"syscall"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// logFilter decides which access-log records are emitted. It holds no
// state across records: sampling is a hash of the connection id, so a
// connection's records are kept or dropped together.
type logFilter struct {
	cfg       LogFilterConfig
	threshold uint64 // keep when hash(conn) < threshold; max keeps all
	sampleAll bool
}

func newLogFilter(cfg LogsConfig) logFilter {
	f := logFilter{cfg: cfg.Filter, sampleAll: cfg.SamplingRatio >= 1}
	if !f.sampleAll {
		f.threshold = uint64(cfg.SamplingRatio * (1 << 63) * 2)
	}
	return f
}

// isFailure is a failed handshake or a connection closed by a reset: such
// records are logged at WARN with their error, and sampling and the
// failures_only filter keep them.
func isFailure(rec *bpf.Record) bool {
	return rec.Kind == bpf.KindFailure ||
		(rec.Kind == bpf.KindClose && (rec.Errno == int32(syscall.ECONNRESET) || rec.Errno == int32(syscall.EPIPE)))
}

// drop returns why a record is not logged, or false to log it.
func (f *logFilter) drop(rec *bpf.Record, o *observation) (metadata.AttributeReason, bool) {
	failure := isFailure(rec)
	if f.cfg.FailuresOnly && !failure {
		return metadata.AttributeReasonFailuresOnly, true
	}
	if len(f.cfg.IncludeNamespaces) > 0 && !slices.Contains(f.cfg.IncludeNamespaces, o.local.Namespace) &&
		!slices.Contains(f.cfg.IncludeNamespaces, o.peer.Namespace) {
		return metadata.AttributeReasonNamespace, true
	}
	if len(f.cfg.ExcludeNamespaces) > 0 && (slices.Contains(f.cfg.ExcludeNamespaces, o.local.Namespace) ||
		slices.Contains(f.cfg.ExcludeNamespaces, o.peer.Namespace)) {
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
