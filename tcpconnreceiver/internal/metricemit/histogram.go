package metricemit

import (
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// appendHistograms adds a series' histograms to ms, merging into metrics
// of the same name: cumulative since the series' start, or with delta what
// was observed since the previous flush (the histograms start again
// empty). mdatagen builds no histograms, so they are built here.
func (e *Emitter) appendHistograms(ms pmetric.MetricSlice, v *profile.View, k *aggregate.Key, s *aggregate.Series, start, ts pcommon.Timestamp) {
	temporality := pmetric.AggregationTemporalityCumulative
	if e.delta {
		temporality = pmetric.AggregationTemporalityDelta
	}
	for _, h := range v.Histograms {
		data := h.Of(s)
		if data.Count == 0 {
			continue
		}
		var m pmetric.Metric
		for i := range ms.Len() {
			if ms.At(i).Name() == h.Name {
				m = ms.At(i)
			}
		}
		if m == (pmetric.Metric{}) {
			m = ms.AppendEmpty()
			m.SetName(h.Name)
			m.SetDescription(h.Description)
			m.SetUnit(h.Unit)
			m.SetEmptyHistogram().SetAggregationTemporality(temporality)
		}
		dp := m.Histogram().DataPoints().AppendEmpty()
		dp.SetStartTimestamp(start)
		dp.SetTimestamp(ts)
		dp.SetCount(data.Count)
		dp.SetSum(data.Sum)
		dp.ExplicitBounds().FromRaw(h.Bounds)
		dp.BucketCounts().FromRaw(data.Counts)
		v.HistogramAttributes(k, dp.Attributes())
		if e.delta {
			data.Reset()
		}
	}
}

// markDelta switches the series' Sums to delta temporality: their values
// already are deltas. It runs before the self-metrics are added, which
// stay cumulative.
func markDelta(md pmetric.Metrics) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				if m := ms.At(k); m.Type() == pmetric.MetricTypeSum && m.Sum().IsMonotonic() {
					m.Sum().SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
				}
			}
		}
	}
}
