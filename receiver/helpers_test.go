package receiver

import (
	"context"
	"testing"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

type blockingLogs struct{ release chan struct{} }

func (b blockingLogs) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (b blockingLogs) ConsumeLogs(context.Context, plog.Logs) error {
	<-b.release
	return nil
}

// findSum returns the single data point of a metric with no attributes, or
// the sum over its points.
func findSum(t *testing.T, md pmetric.Metrics, name string) int64 {
	t.Helper()
	var total int64
	found := false
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				m := ms.At(k)
				if m.Name() != name {
					continue
				}
				found = true
				dps := m.Sum().DataPoints()
				for d := range dps.Len() {
					total += dps.At(d).IntValue()
				}
			}
		}
	}
	if !found {
		t.Fatalf("metric %s not found", name)
	}
	return total
}

// sumWhere sums a metric's points whose attribute key has value val.
func sumWhere(t *testing.T, md pmetric.Metrics, name, key, val string) int64 {
	t.Helper()
	var total int64
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				if ms.At(k).Name() != name {
					continue
				}
				dps := ms.At(k).Sum().DataPoints()
				for d := range dps.Len() {
					if v, ok := dps.At(d).Attributes().Get(key); ok && v.Str() == val {
						total += dps.At(d).IntValue()
					}
				}
			}
		}
	}
	return total
}
