package receiver

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

func TestErrorTypes(t *testing.T) {
	for errno, want := range map[syscall.Errno]metadata.AttributeErrorType{
		syscall.ECONNREFUSED: metadata.AttributeErrorTypeRefused,
		syscall.ETIMEDOUT:    metadata.AttributeErrorTypeTimedOut,
		syscall.ECONNRESET:   metadata.AttributeErrorTypeReset,
		syscall.EHOSTUNREACH: metadata.AttributeErrorTypeUnreachable,
		syscall.ENETUNREACH:  metadata.AttributeErrorTypeUnreachable,
		0:                    metadata.AttributeErrorTypeAborted,
		syscall.EPERM:        metadata.AttributeErrorTypeOther,
	} {
		assert.Equal(t, want, errorTypeAttr(int32(errno)), "errno %d", errno)
	}
}

// aggHarness feeds records through a tracker into an aggregator and
// emits them, as the receiver does, on a clock the test controls.
type aggHarness struct {
	cfg   *Config
	track *tracker
	agg   *aggregator
	mb    *metadata.MetricsBuilder
}

func newAggHarness(cfg *Config, res identity.Resolver) *aggHarness {
	return &aggHarness{
		cfg: cfg, track: newTracker(res, true, false), agg: newAggregator(cfg, t0),
		mb: metadata.NewMetricsBuilder(cfg.MetricsBuilderConfig, receivertest.NewNopSettings(metadata.Type), metadata.WithStartTime(pcommon.NewTimestampFromTime(t0))),
	}
}

func (h *aggHarness) add(recs ...bpf.Record) {
	for i := range recs {
		if o, keep := h.track.observe(&recs[i]); keep {
			h.agg.add(&recs[i], &o)
		}
	}
}

func (h *aggHarness) emit(at time.Time) pmetric.Metrics {
	res := pcommon.NewResource()
	res.Attributes().PutStr("host.name", "node-a")
	return h.agg.emit(h.mb, at, res, func(pcommon.Timestamp) {})
}

func TestAggregatorSumsPerSeries(t *testing.T) {
	h := newAggHarness(createDefaultConfig(), identity.AddressOnly{})
	recs := fixedRecords()
	for range 3 {
		h.track = newTracker(identity.AddressOnly{}, true, false)
		h.add(recs...)
	}
	md := h.emit(t0.Add(time.Minute))
	// Per round: connection 1 (100000 / 5000, 2 retransmits, 1 lost) and the
	// live connection 8 (4096 / 1024, 1 retransmit), which stays open.
	assert.Equal(t, int64(3*(100000+4096)), sumWhere(t, md, "tcp.bytes.sent", "direction", "outbound")-3*1, "the v6 connection sent 1 byte")
	assert.Equal(t, int64(3), sumWhere(t, md, "tcp.connections.opened", "direction", "outbound"))
	assert.Equal(t, int64(3), sumWhere(t, md, "tcp.connections.open", "direction", "outbound"))
	assert.Equal(t, int64(9), sumWhere(t, md, "tcp.retransmits", "direction", "outbound"))
	assert.Equal(t, int64(3), sumWhere(t, md, "tcp.connections.failed", "error.type", "refused"))
}

// BenchmarkAggregate is the metrics hot path per record: filter, identity
// of both ends (cached per connection), and the series of both views. It
// must not allocate.
func BenchmarkAggregate(b *testing.B) {
	for _, profile := range []string{ProfileOTel, ProfileIstio, ProfileKmesh} {
		b.Run(profile, func(b *testing.B) {
			cfg := createDefaultConfig()
			cfg.Profile = profile
			r := &tcpconnReceiver{
				agg:    newAggregator(cfg, t0),
				track:  newTracker(fixedResolver(), true, false),
				filter: newAddrFilter(FilterConfig{IncludeCIDRs: []string{"10.0.0.0/8"}}),
				mb:     &metadata.MetricsBuilder{},
			}
			recs := fixedRecords()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r.handle(&recs[i%len(recs)])
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
