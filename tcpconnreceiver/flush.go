package tcpconnreceiver

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.uber.org/zap"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// selfCounters are the receiver's own counts: everything read, dropped,
// filtered or lost is visible as a self-metric.
type selfCounters struct {
	recordsRead  atomic.Int64
	lostConns    atomic.Int64
	evictedConns atomic.Int64
	filtered     atomic.Int64
	logsFiltered [8]atomic.Int64 // by metadata.AttributeReason
}

func (r *tcpconnReceiver) flushLoop(ctx context.Context) {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			r.flushMetrics(ctx)
		case <-r.readerDone:
			// Everything the probe produced has been aggregated.
			r.flushMetrics(ctx)
			return
		}
	}
}

func (r *tcpconnReceiver) flushMetrics(ctx context.Context) {
	r.backlogsMu.Lock()
	r.emitter.SetBacklogs(r.backlogs)
	r.backlogsMu.Unlock()
	md := r.emitter.Emit(r.agg, time.Now(), r.recordSelfMetrics)
	points := md.DataPointCount()
	if points == 0 {
		return
	}
	// Accepted and refused points are counted by the collector's own
	// telemetry (otelcol_receiver_accepted/refused_metric_points).
	opCtx := r.obs.StartMetricsOp(ctx)
	err := r.metrics.ConsumeMetrics(opCtx, md)
	r.obs.EndMetricsOp(opCtx, metadata.Type.String(), points, err)
	if err != nil {
		r.set.Logger.Warn("metrics consumer refused a flush", zap.Error(err))
	}
}

// identityStates are tcpconn.identity.status's states, each a point in
// every flush (1 for the current one), in a fixed order.
var identityStates = []metadata.AttributeState{
	metadata.AttributeStateOk, metadata.AttributeStateDegraded, metadata.AttributeStateOff, metadata.AttributeStateDisabled,
}

// recordSelfMetrics writes the receiver's own counters.
func (r *tcpconnReceiver) recordSelfMetrics(mb *metadata.MetricsBuilder, now pcommon.Timestamp) {
	mb.RecordTcpconnProbeRecordsDataPoint(now, r.recordsRead.Load())
	mb.RecordTcpconnRecordsFilteredDataPoint(now, r.filtered.Load())
	mb.RecordTcpconnConnectionsLostDataPoint(now, r.lostConns.Load())
	mb.RecordTcpconnConnectionsEvictedDataPoint(now, r.evictedConns.Load())
	if st, err := r.src.Stats(); err == nil {
		mb.RecordTcpconnProbeRecordsDroppedDataPoint(now, int64(st.Dropped))
		mb.RecordTcpconnProbeHandshakesUntrackedDataPoint(now, int64(st.NoState))
		mb.RecordTcpconnProbeEventsMissedDataPoint(now, int64(st.Missed))
		mb.RecordTcpconnProbeSocketsUntrackedDataPoint(now, int64(st.Untracked))
		mb.RecordTcpconnProbeSocketsStaleDataPoint(now, int64(st.Stale))
	} else {
		r.set.Logger.Warn("read probe stats", zap.Error(err))
	}
	identity := metadata.AttributeState(r.identityState.Load())
	for _, s := range identityStates {
		v := int64(0)
		if s == identity {
			v = 1
		}
		mb.RecordTcpconnIdentityStatusDataPoint(now, v, s)
	}
	if r.batcher != nil {
		mb.RecordTcpconnLogsDroppedDataPoint(now, r.batcher.Dropped())
		for _, reason := range metadata.MapAttributeReason {
			mb.RecordTcpconnLogsFilteredDataPoint(now, r.logsFiltered[reason].Load(), reason)
		}
	}
}

func (r *tcpconnReceiver) sendLoop(ctx context.Context) {
	defer r.wg.Done()
	for ld := range r.batcher.Queue() {
		opCtx := r.obs.StartLogsOp(ctx)
		err := r.logs.ConsumeLogs(opCtx, ld)
		r.obs.EndLogsOp(opCtx, metadata.Type.String(), ld.LogRecordCount(), err)
		if err != nil {
			r.set.Logger.Warn("logs consumer refused a batch", zap.Int("records", ld.LogRecordCount()), zap.Error(err))
		}
	}
}
