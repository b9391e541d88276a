package receiver

import (
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// logBatcher collects access-log records into bounded pdata batches and
// hands full ones to the sender through a bounded queue. It is owned by the
// reader goroutine and never blocks it: when the queue is full the batch is
// dropped and counted.
type logBatcher struct {
	cfg      LogsConfig
	resource pcommon.Resource
	conv     logConverter
	queue    chan plog.Logs
	dropped  atomic.Int64

	cur     plog.Logs
	records plog.LogRecordSlice
	n       int
	first   time.Time
}

func newLogBatcher(cfg LogsConfig, resource pcommon.Resource) *logBatcher {
	return &logBatcher{cfg: cfg, resource: resource, queue: make(chan plog.Logs, cfg.QueueSize)}
}

// wants reports whether rec's kind is configured to produce a log record.
func (b *logBatcher) wants(rec *bpf.Record) bool {
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

func (b *logBatcher) add(rec *bpf.Record, o *observation, now time.Time) {
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
	b.conv.fill(b.records.AppendEmpty(), rec, o, now)
	b.n++
	if b.n >= b.cfg.MaxBatchSize || now.Sub(b.first) >= b.cfg.FlushInterval {
		b.send()
	}
}

// tick sends a partial batch that has waited its flush interval.
func (b *logBatcher) tick(now time.Time) {
	if b.n > 0 && now.Sub(b.first) >= b.cfg.FlushInterval {
		b.send()
	}
}

func (b *logBatcher) send() {
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

// close sends what is left and closes the queue; the sender drains it.
func (b *logBatcher) close() {
	b.send()
	close(b.queue)
}
