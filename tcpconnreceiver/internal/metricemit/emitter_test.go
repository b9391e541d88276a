package metricemit

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func setup(name string, delta bool) (*aggregate.Aggregator, *Emitter) {
	prof := profile.New(profile.Options{Name: name, Workload: true, Service: true, Histograms: true})
	agg := aggregate.New(prof.Specs(), aggregate.Limits{Series: 100})
	base := pcommon.NewResource()
	base.Attributes().PutStr("host.name", "node-a")
	mb := metadata.NewMetricsBuilder(metadata.DefaultMetricsBuilderConfig(), receivertest.NewNopSettings(metadata.Type))
	return agg, New(mb, prof, Options{Delta: delta, Started: t0, Resource: base})
}

func addClose(agg *aggregate.Aggregator, at time.Time, sent uint64) {
	rec := &bpf.Record{Kind: bpf.KindClose, Direction: bpf.DirectionOutbound, Time: at, Start: at.Add(-time.Second), SRTT: time.Millisecond}
	id := &identity.Identity{Workload: "web", WorkloadKind: "Deployment", Namespace: "shop", Pod: "web-1"}
	agg.Add(rec, &conntable.Observation{Local: id, Peer: id, Delta: conntable.Counters{Sent: sent}})
}

func self(mb *metadata.MetricsBuilder, ts pcommon.Timestamp) {
	mb.RecordTcpconnProbeRecordsDataPoint(ts, 7)
}

// metrics indexes every metric by name with the attributes of its Resource.
func metrics(md pmetric.Metrics) map[string][]pmetric.Metric {
	out := map[string][]pmetric.Metric{}
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			for k := range sms.At(j).Metrics().Len() {
				m := sms.At(j).Metrics().At(k)
				out[m.Name()] = append(out[m.Name()], m)
			}
		}
	}
	return out
}

func TestDeltaLeavesSelfMetricsCumulative(t *testing.T) {
	for _, name := range profile.Names {
		agg, em := setup(name, true)
		addClose(agg, t0.Add(time.Second), 100)
		em.Emit(agg, t0.Add(5*time.Second), self)
		addClose(agg, t0.Add(6*time.Second), 50)
		md := em.Emit(agg, t0.Add(10*time.Second), self)
		ms := metrics(md)
		for n, list := range ms {
			for _, m := range list {
				if m.Type() != pmetric.MetricTypeSum || !m.Sum().IsMonotonic() {
					continue
				}
				want := pmetric.AggregationTemporalityDelta
				if n == "tcpconn.probe.records" || n == "tcpconn.series.overflow" {
					want = pmetric.AggregationTemporalityCumulative
				}
				assert.Equal(t, want, m.Sum().AggregationTemporality(), "%s: %s", name, n)
			}
		}
		require.Contains(t, ms, "tcpconn.probe.records", name)
		dp := ms["tcpconn.probe.records"][0].Sum().DataPoints().At(0)
		assert.Equal(t, t0, dp.StartTimestamp().AsTime().UTC(), "self-metrics count since the start")
	}
}

func TestResources(t *testing.T) {
	agg, em := setup(profile.Istio, false)
	addClose(agg, t0, 1)
	md := em.Emit(agg, t0.Add(time.Second), self)
	require.Equal(t, 1, md.ResourceMetrics().Len(), "istio: series and self-metrics share the receiver's Resource")
	host, _ := md.ResourceMetrics().At(0).Resource().Attributes().Get("host.name")
	assert.Equal(t, "node-a", host.Str())

	agg, em = setup(profile.OTel, false)
	addClose(agg, t0, 1)
	md = em.Emit(agg, t0.Add(time.Second), self)
	// The local pod's series and histograms, and the receiver's own.
	pods := 0
	for i := range md.ResourceMetrics().Len() {
		attrs := md.ResourceMetrics().At(i).Resource().Attributes()
		if pod, ok := attrs.Get("k8s.pod.name"); ok {
			pods++
			assert.Equal(t, "web-1", pod.Str())
			dep, _ := attrs.Get("k8s.deployment.name")
			assert.Equal(t, "web", dep.Str())
		}
		host, _ := attrs.Get("host.name")
		assert.Equal(t, "node-a", host.Str(), "every Resource keeps the receiver's attributes")
	}
	assert.Equal(t, 2, pods, "series and histograms of the local pod")
	assert.Len(t, metrics(md)["tcp.connection.duration"], 1)
}

// Chunks split a shared Resource's series over several ResourceMetrics
// with that Resource, and change no value.
func TestChunks(t *testing.T) {
	flush := func(chunk int) pmetric.Metrics {
		prof := profile.New(profile.Options{Name: profile.Istio})
		agg := aggregate.New(prof.Specs(), aggregate.Limits{Series: 100})
		base := pcommon.NewResource()
		base.Attributes().PutStr("host.name", "node-a")
		mb := metadata.NewMetricsBuilder(metadata.DefaultMetricsBuilderConfig(), receivertest.NewNopSettings(metadata.Type))
		em := New(mb, prof, Options{Started: t0, Resource: base, Chunk: chunk})
		for i := range 5 {
			rec := &bpf.Record{Kind: bpf.KindClose, Direction: bpf.DirectionOutbound, Time: t0}
			peer := &identity.Identity{Workload: fmt.Sprintf("db-%d", i)}
			agg.Add(rec, &conntable.Observation{Local: &identity.Identity{}, Peer: peer, Delta: conntable.Counters{Sent: uint64(i + 1)}})
		}
		return em.Emit(agg, t0.Add(time.Second), self)
	}
	whole, chunked := flush(0), flush(2)
	assert.Equal(t, 1, whole.ResourceMetrics().Len())
	assert.Equal(t, 3, chunked.ResourceMetrics().Len(), "5 series in chunks of 2")
	for i := range chunked.ResourceMetrics().Len() {
		assert.Equal(t, whole.ResourceMetrics().At(0).Resource().Attributes().AsRaw(), chunked.ResourceMetrics().At(i).Resource().Attributes().AsRaw())
	}
	assert.Equal(t, whole.DataPointCount(), chunked.DataPointCount())
	sum := func(md pmetric.Metrics) (total int64) {
		for _, m := range metrics(md)["istio_tcp_received_bytes"] {
			for i := range m.Sum().DataPoints().Len() {
				total += m.Sum().DataPoints().At(i).IntValue()
			}
		}
		return total
	}
	assert.Equal(t, int64(15), sum(chunked))
	assert.Equal(t, sum(whole), sum(chunked))
	assert.Len(t, metrics(chunked)["tcpconn.probe.records"], 1, "the self-metrics join the first")
}
