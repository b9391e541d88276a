package receiver

import (
	"testing"

	"go.opentelemetry.io/collector/pdata/plog"
)

// BenchmarkLogRecord is the access-log path per record: one pdata log
// record with its body line and typed attributes, identities of both ends
// resolved. pdata allocates per attribute; this shows how much.
func BenchmarkLogRecord(b *testing.B) {
	track := newTracker(fixedResolver(), true, false)
	recs := fixedRecords()
	obs := make([]observation, len(recs))
	for i := range recs {
		obs[i], _ = track.observe(&recs[i])
	}
	var conv logConverter
	newBatch := func() plog.LogRecordSlice {
		lrs := plog.NewLogs().ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
		lrs.EnsureCapacity(1000)
		return lrs
	}
	lrs := newBatch()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if lrs.Len() == 1000 {
			lrs = newBatch()
		}
		n := i % len(recs)
		conv.fill(lrs.AppendEmpty(), &recs[n], &obs[n], t0)
		i++
	}
}
