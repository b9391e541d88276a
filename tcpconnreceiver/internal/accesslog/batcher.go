package accesslog

import (
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// Batcher collects access-log records into bounded pdata batches and
// hands full ones to the sender through a bounded queue. It is owned by
// the reader goroutine and never blocks it: when the queue is full the
// batch is dropped and counted.
type Batcher struct {
	cfg      Config
	resource pcommon.Resource
	conv     *Converter
	queue    chan plog.Logs
	dropped  atomic.Int64

	cur     plog.Logs
	records plog.LogRecordSlice
	n       int
	first   time.Time
}

// NewBatcher returns a batcher whose batches carry resource.
func NewBatcher(cfg Config, resource pcommon.Resource) *Batcher {
	return &Batcher{cfg: cfg, resource: resource, conv: NewConverter(cfg), queue: make(chan plog.Logs, cfg.QueueSize)}
}

// Queue is where full batches wait for the sender; it is closed by Close.
func (b *Batcher) Queue() <-chan plog.Logs { return b.queue }

// Dropped counts the records dropped because the queue was full.
func (b *Batcher) Dropped() int64 { return b.dropped.Load() }

// Wants reports whether rec's kind is configured to produce a log record.
func (b *Batcher) Wants(rec *bpf.Record) bool {
	switch rec.Kind {
	case bpf.KindOpen:
		return b.cfg.Open
	case bpf.KindClose:
		return b.cfg.Close
	case bpf.KindFailure:
		return b.cfg.Failure
	case bpf.KindUpdate:
		return b.cfg.Update
	}
	return false
}

// Add appends rec's access-log record to the current batch, observed at now.
func (b *Batcher) Add(rec *bpf.Record, o *conntable.Observation, now time.Time) {
	if b.n == 0 {
		b.cur = plog.NewLogs()
		rl := b.cur.ResourceLogs().AppendEmpty()
		b.resource.CopyTo(rl.Resource())
		sl := rl.ScopeLogs().AppendEmpty()
		sl.Scope().SetName(metadata.ScopeName)
		b.records = sl.LogRecords()
		b.records.EnsureCapacity(min(b.cfg.MaxBatchSize, 256))
		b.first = now
	}
	b.conv.Fill(b.records.AppendEmpty(), rec, o, now)
	b.n++
	if b.n >= b.cfg.MaxBatchSize || now.Sub(b.first) >= b.cfg.FlushInterval {
		b.send()
	}
}

// Pending says whether a partial batch waits for Tick.
func (b *Batcher) Pending() bool { return b.n > 0 }

// Tick sends a partial batch that has waited its flush interval.
func (b *Batcher) Tick(now time.Time) {
	if b.n > 0 && now.Sub(b.first) >= b.cfg.FlushInterval {
		b.send()
	}
}

func (b *Batcher) send() {
	if b.n == 0 {
		return
	}
	select {
	case b.queue <- b.cur:
	default:
		b.dropped.Add(int64(b.n))
	}
	b.cur, b.records, b.n = plog.Logs{}, plog.LogRecordSlice{}, 0
}

// Close sends what is left and closes the queue; the sender drains it.
func (b *Batcher) Close() {
	b.send()
	close(b.queue)
}
