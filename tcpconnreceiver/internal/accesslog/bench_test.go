package accesslog

import (
	"testing"

	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

// BenchmarkLogRecord is the access-log path per record: one pdata log
// record with its body line and typed attributes, identities of both ends
// resolved. pdata allocates per attribute; this shows how much.
func BenchmarkLogRecord(b *testing.B) {
	track := conntable.New(fixedResolver(), true, false)
	recs := fixedRecords()
	obs := make([]conntable.Observation, len(recs))
	for i := range recs {
		obs[i], _ = track.Observe(&recs[i])
	}
	var conv Converter
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
		conv.Fill(lrs.AppendEmpty(), &recs[n], &obs[n], t0)
		i++
	}
}
