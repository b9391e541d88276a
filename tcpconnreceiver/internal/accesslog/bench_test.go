package accesslog

import (
	"bytes"
	"compress/gzip"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"

	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

// BenchmarkLogRecord is the access-log path per record: one pdata log
// record with its body line and typed attributes, identities of both ends
// resolved. pdata allocates per attribute; this shows how much.
func BenchmarkLogRecord(b *testing.B) { benchFill(b, NewConverter(DefaultConfig())) }

// BenchmarkLogRecordNoBody is BenchmarkLogRecord with logs.body: none.
func BenchmarkLogRecordNoBody(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Body = BodyNone
	benchFill(b, NewConverter(cfg))
}

func benchFill(b *testing.B, conv *Converter) {
	recs, obs := observed()
	benchBatches(b, func(lr plog.LogRecord, i int) {
		n := i % len(recs)
		conv.Fill(lr, &recs[n], &obs[n], t0)
	})
}

// BenchmarkLogRecordCopy is the floor under BenchmarkLogRecord: the same
// records, already built, copied into a batch. Nothing is computed; what it
// costs is pdata's own (a record, its attribute array, one allocation per
// value).
func BenchmarkLogRecordCopy(b *testing.B) {
	recs, obs := observed()
	var conv Converter
	built := plog.NewLogRecordSlice()
	for i := range recs {
		conv.Fill(built.AppendEmpty(), &recs[i], &obs[i], t0)
	}
	benchBatches(b, func(lr plog.LogRecord, i int) { built.At(i % built.Len()).CopyTo(lr) })
}

// benchBatches has fill write record i of each iteration into batches of
// 1000, which stay alive while they fill, as the batcher's do.
func benchBatches(b *testing.B, fill func(lr plog.LogRecord, i int)) {
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
		fill(lrs.AppendEmpty(), i)
		i++
	}
}

// BenchmarkBatchBytes is what the capacity model (docs/scale.md) needs of
// access logs: OTLP bytes per record in a batch of 1000, raw, gzip and
// snappy (what the agent's exporter sends).
func BenchmarkBatchBytes(b *testing.B) {
	recs, obs := observed()
	var conv Converter
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for i := range 1000 {
		n := i % len(recs)
		rec := recs[n]
		// Distinct connections, as in a real batch: ids, ports, counters
		// and times differ (identities repeat: pods talk again and again).
		rec.ConnID += uint64(i) * 7919
		rec.LocalPort, rec.PeerPort = uint16(32768+i*13%28000), uint16(8000+i%7)
		rec.BytesSent, rec.BytesReceived = uint64(i*104729%9000001), uint64(i*130363%700001)
		rec.Time = rec.Time.Add(time.Duration(i) * 1733 * time.Microsecond)
		rec.SRTT, rec.PID = time.Duration(50+i%900)*time.Microsecond, uint32(1000+i%50)
		conv.Fill(lrs.AppendEmpty(), &rec, &obs[n], t0)
	}
	var raw []byte
	for b.Loop() {
		var err error
		if raw, err = (&plog.ProtoMarshaler{}).MarshalLogs(ld); err != nil {
			b.Fatal(err)
		}
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	b.ReportMetric(float64(len(raw))/1000, "otlp-B/record")
	b.ReportMetric(float64(z.Len())/1000, "gzip-B/record")
	b.ReportMetric(float64(len(snappy.Encode(nil, raw)))/1000, "snappy-B/record")
}

// observed is the fixture's records with what the connection table made of
// them, identities of both ends resolved.
func observed() ([]bpf.Record, []conntable.Observation) {
	track := conntable.New(fixedResolver(), true, false)
	recs := fixedRecords()
	obs := make([]conntable.Observation, len(recs))
	for i := range recs {
		obs[i], _ = track.Observe(&recs[i])
	}
	return recs, obs
}
