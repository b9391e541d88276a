package tcpconnreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

type blockingLogs struct{ release chan struct{} }

func (b blockingLogs) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (b blockingLogs) ConsumeLogs(context.Context, plog.Logs) error {
	<-b.release
	return nil
}

// forEachSumPoint calls fn for every data point of the named Sum metric
// and reports whether the metric was found.
func forEachSumPoint(md pmetric.Metrics, name string, fn func(pmetric.NumberDataPoint)) bool {
	found := false
	forEachMetric(md, func(m pmetric.Metric) {
		if m.Name() != name || m.Type() != pmetric.MetricTypeSum {
			return
		}
		found = true
		dps := m.Sum().DataPoints()
		for d := range dps.Len() {
			fn(dps.At(d))
		}
	})
	return found
}

// findSum sums the points of a Sum metric, failing if it is absent.
func findSum(t *testing.T, md pmetric.Metrics, name string) int64 {
	t.Helper()
	var total int64
	if !forEachSumPoint(md, name, func(dp pmetric.NumberDataPoint) { total += dp.IntValue() }) {
		t.Fatalf("metric %s not found", name)
	}
	return total
}

// sumWhere sums a metric's points whose attribute key has value val.
func sumWhere(t *testing.T, md pmetric.Metrics, name, key, val string) int64 {
	t.Helper()
	var total int64
	forEachSumPoint(md, name, func(dp pmetric.NumberDataPoint) {
		if v, ok := dp.Attributes().Get(key); ok && v.Str() == val {
			total += dp.IntValue()
		}
	})
	return total
}

// sumForResource sums a metric's points under Resources whose attribute
// key has value val.
func sumForResource(md pmetric.Metrics, name, key, val string) int64 {
	var total int64
	forEachResourceSumPoint(md, name, key, val, func(dp pmetric.NumberDataPoint) { total += dp.IntValue() })
	return total
}

// forEachResourceSumPoint calls fn for every point of the named Sum
// metric under Resources whose attribute key has value val.
func forEachResourceSumPoint(md pmetric.Metrics, name, key, val string, fn func(pmetric.NumberDataPoint)) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		if v, ok := rms.At(i).Resource().Attributes().Get(key); !ok || v.Str() != val {
			continue
		}
		one := pmetric.NewMetrics()
		rms.At(i).CopyTo(one.ResourceMetrics().AppendEmpty())
		forEachSumPoint(one, name, fn)
	}
}

// forEachMetric calls fn for every metric in md.
func forEachMetric(md pmetric.Metrics, fn func(pmetric.Metric)) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				fn(ms.At(k))
			}
		}
	}
}

func forEachLog(batches []plog.Logs, fn func(plog.LogRecord)) {
	for _, ld := range batches {
		rls := ld.ResourceLogs()
		for i := range rls.Len() {
			sls := rls.At(i).ScopeLogs()
			for j := range sls.Len() {
				lrs := sls.At(j).LogRecords()
				for k := range lrs.Len() {
					fn(lrs.At(k))
				}
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// startBoth creates the receiver through its factory for both signals, with
// the real probe, and starts it; status goes to the returned host.
func startBoth(t *testing.T, cfg *Config) (receiver.Metrics, receiver.Logs, *consumertest.MetricsSink, *consumertest.LogsSink, *statusHost) {
	t.Helper()
	set := receivertest.NewNopSettings(metadata.Type)
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	f := NewFactory()
	mr, err := f.CreateMetrics(context.Background(), set, cfg, metrics)
	require.NoError(t, err)
	lr, err := f.CreateLogs(context.Background(), set, cfg, logs)
	require.NoError(t, err)
	host := &statusHost{}
	require.NoError(t, mr.Start(context.Background(), host))
	require.NoError(t, lr.Start(context.Background(), host))
	return mr, lr, metrics, logs, host
}
