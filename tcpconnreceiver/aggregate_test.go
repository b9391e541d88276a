package tcpconnreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/cidrfilter"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metricemit"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// aggHarness feeds records through a tracker into an aggregator and
// emits them, as the receiver does, on a clock the test controls.
type aggHarness struct {
	cfg   *Config
	track *conntable.Table
	agg   *aggregate.Aggregator
	em    *metricemit.Emitter
}

func newAggHarness(cfg *Config, res identity.Resolver) *aggHarness {
	prof := profile.New(cfg.profileOptions())
	base := pcommon.NewResource()
	base.Attributes().PutStr("host.name", "node-a")
	mb := metadata.NewMetricsBuilder(cfg.MetricsBuilderConfig, receivertest.NewNopSettings(metadata.Type), metadata.WithStartTime(pcommon.NewTimestampFromTime(t0)))
	return &aggHarness{
		cfg: cfg, track: conntable.New(res, true, false), agg: aggregate.New(prof.Specs(), cfg.limits()),
		em: metricemit.New(mb, prof, metricemit.Options{Delta: cfg.Temporality == TemporalityDelta, Started: t0, Resource: base,
			Chunk: emitChunk(&cfg.MetricsBuilderConfig)}),
	}
}

func (h *aggHarness) add(recs ...bpf.Record) {
	for i := range recs {
		if o, keep := h.track.Observe(&recs[i]); keep {
			h.agg.Add(&recs[i], &o)
		}
	}
}

func (h *aggHarness) emit(at time.Time) pmetric.Metrics {
	return h.em.Emit(h.agg, at, noSelfMetrics)
}

func noSelfMetrics(*metadata.MetricsBuilder, pcommon.Timestamp) {}

func TestAggregatorSumsPerSeries(t *testing.T) {
	h := newAggHarness(createDefaultConfig(), identity.AddressOnly{})
	recs := fixedRecords()
	for range 3 {
		h.track = conntable.New(identity.AddressOnly{}, true, false)
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
	for _, name := range []string{ProfileOTel, ProfileIstio, ProfileKmesh} {
		b.Run(name, func(b *testing.B) {
			cfg := createDefaultConfig()
			cfg.Profile = name
			r := &tcpconnReceiver{pipeline: pipeline{
				agg:    aggregate.New(profile.New(cfg.profileOptions()).Specs(), cfg.limits()),
				track:  conntable.New(fixedResolver(), true, false),
				filter: cidrfilter.New(FilterConfig{IncludeCIDRs: []string{"10.0.0.0/8"}}),
			}}
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
