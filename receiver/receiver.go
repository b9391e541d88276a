package receiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// recordSource is what the receiver needs of the probe; tests substitute
// a scripted source to drive the receiver without a kernel.
type recordSource interface {
	Read(*bpf.Record) error
	Walk(func(*bpf.Record)) (int, error)
	CanWalk() error
	Stop() error
	Close() error
	Stats() (bpf.Stats, error)
}

type tcpconnReceiver struct {
	set      receiver.Settings
	cfg      *Config
	open     func(bpf.Options) (recordSource, error)
	resolver identity.Resolver
	kube     *kube.Resolver
	track    *tracker
	host     component.Host
	release  func()

	metrics consumer.Metrics
	logs    consumer.Logs
	obs     *receiverhelper.ObsReport

	startOnce    sync.Once
	startErr     error
	shutdownOnce sync.Once
	src          recordSource
	agg          *aggregator
	batcher      *logBatcher
	mb           *metadata.MetricsBuilder
	resource     pcommon.Resource
	recordsRead  atomic.Int64
	lostConns    atomic.Int64
	evictedConns atomic.Int64
	logFilter    logFilter
	logsFiltered [8]atomic.Int64 // by metadata.AttributeReason
	filtered     atomic.Int64
	filter       addrFilter
	cancel       context.CancelFunc
	readerDone   chan struct{}
	wg           sync.WaitGroup
}

func newReceiver(set receiver.Settings, cfg *Config, release func()) *tcpconnReceiver {
	return &tcpconnReceiver{
		set:      set,
		cfg:      cfg,
		open:     openProbe,
		resolver: identity.AddressOnly{},
		release:  release,
	}
}

func openProbe(opts bpf.Options) (recordSource, error) {
	p, err := bpf.Load(opts)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (r *tcpconnReceiver) setMetrics(next consumer.Metrics) { r.metrics = next }
func (r *tcpconnReceiver) setLogs(next consumer.Logs)       { r.logs = next }

// Start loads the probe and starts the reader, the metrics flusher and the
// logs sender. It runs once however many pipelines share the receiver.
func (r *tcpconnReceiver) Start(_ context.Context, host component.Host) error {
	r.startOnce.Do(func() {
		r.host = host
		r.startErr = r.start()
	})
	return r.startErr
}

func (r *tcpconnReceiver) start() error {
	obs, err := receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID: r.set.ID, Transport: "ebpf", LongLivedCtx: true, ReceiverCreateSettings: r.set,
	})
	if err != nil {
		return fmt.Errorf("tcpconn obsreport: %w", err)
	}
	r.obs = obs
	src, err := r.open(r.cfg.probeOptions())
	if err != nil {
		return fmt.Errorf("start tcpconn probe: %w", err)
	}
	r.src = src
	if p, ok := src.(*bpf.Probe); ok {
		fields := []zap.Field{zap.String("attach_mode", string(p.Mode()))}
		if reason := p.FallbackReason(); reason != nil {
			fields = append(fields, zap.NamedError("tp_btf_error", reason))
		}
		r.set.Logger.Info("tcpconn probe attached", fields...)
	}

	rb := metadata.NewResourceBuilder(r.cfg.ResourceAttributes)
	if host, err := os.Hostname(); err == nil {
		rb.SetHostName(host)
	}
	if node := r.cfg.Kubernetes.NodeName; node != "" {
		rb.SetK8sNodeName(node)
	}
	r.resource = rb.Emit()
	started := time.Now()
	r.agg = newAggregator(r.cfg, started)
	r.agg.version = r.set.BuildInfo.Version
	r.filter = newAddrFilter(r.cfg.Filter)
	if r.cfg.Kubernetes.Enabled {
		r.startKubernetes()
	}
	r.track = newTracker(r.resolver, r.cfg.AdoptExisting, r.cfg.CountAdoptedBytes)
	if r.logs != nil {
		r.batcher = newLogBatcher(r.cfg.Logs, r.resource)
		r.logFilter = newLogFilter(r.cfg.Logs)
	}
	if r.metrics != nil {
		r.mb = metadata.NewMetricsBuilder(r.cfg.MetricsBuilderConfig, r.set, metadata.WithStartTime(pcommon.NewTimestampFromTime(started)))
	}

	// Background work outlives Start's context: derive from Background.
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.readerDone = make(chan struct{})
	r.wg.Add(1)
	go r.readLoop()
	if r.metrics != nil {
		r.wg.Add(1)
		go r.flushLoop(ctx)
	}
	if r.batcher != nil {
		r.wg.Add(1)
		go r.sendLoop(ctx)
	}
	return nil
}

// startKubernetes starts the identity resolver. Without API access the
// receiver keeps running with address-only identity and reports a
// recoverable error through component status until the API answers.
func (r *tcpconnReceiver) startKubernetes() {
	client, err := kube.NewClient(r.cfg.Kubernetes)
	if err != nil {
		r.set.Logger.Warn("Kubernetes identity unavailable, reporting addresses only", zap.Error(err))
		componentstatus.ReportStatus(r.host, componentstatus.NewRecoverableErrorEvent(err))
		return
	}
	r.kube = kube.New(client, r.cfg.Kubernetes, kube.Options{OnHealth: r.kubeHealth})
	r.resolver = r.kube
	r.kube.Start()
}

func (r *tcpconnReceiver) kubeHealth(err error) {
	if err != nil {
		r.set.Logger.Warn("Kubernetes identity degraded: known identities are kept, new pods are unknown until the API server answers", zap.Error(err))
		componentstatus.ReportStatus(r.host, componentstatus.NewRecoverableErrorEvent(err))
		return
	}
	r.set.Logger.Info("Kubernetes identity synchronised")
	componentstatus.ReportStatus(r.host, componentstatus.NewEvent(componentstatus.StatusOK))
}

// readLoop is the only reader of the probe; it ends when the probe is
// stopped and drained, so records produced before Shutdown are delivered.
// It also runs the report walks, so that updates and closes of one
// connection are handled in order.
func (r *tcpconnReceiver) readLoop() {
	defer r.wg.Done()
	defer close(r.readerDone)
	if r.batcher != nil {
		defer r.batcher.close()
	}
	reports := r.startReports()
	next := time.Now().Add(r.cfg.ReportInterval)
	var rec bpf.Record
	for {
		err := r.src.Read(&rec)
		switch {
		case err == nil:
			r.recordsRead.Add(1)
			r.handle(&rec)
			if reports && !rec.Time.Before(next) {
				next = r.report(next, rec.Time)
			}
		case errors.Is(err, bpf.ErrNoData):
			now := time.Now()
			if r.batcher != nil {
				r.batcher.tick(now)
			}
			if reports && !now.Before(next) {
				next = r.report(next, now)
			}
		case errors.Is(err, bpf.ErrStopped):
			return
		default:
			r.set.Logger.Error("tcpconn probe reader stopped", zap.Error(err))
			return
		}
	}
}

// startReports runs the start-up walk, which adopts the connections open
// before the receiver started and takes their counters as the baseline (or
// sets them aside, without adopt_existing). It reports whether periodic
// reports will run.
func (r *tcpconnReceiver) startReports() bool {
	if r.cfg.ReportInterval <= 0 {
		return false
	}
	if err := r.src.CanWalk(); err != nil {
		r.set.Logger.Warn("periodic reports of open connections are off", zap.Error(err))
		return false
	}
	n, err := r.walk(true)
	if err != nil {
		r.set.Logger.Warn("start-up report walk failed", zap.Error(err))
	}
	r.set.Logger.Info("connections open at start", zap.Int("sockets", n), zap.Bool("adopted", r.cfg.AdoptExisting))
	return true
}

// walk runs one report walk through handle, then takes the connections it
// found gone off the open counts. baseline marks the start-up walk.
func (r *tcpconnReceiver) walk(baseline bool) (int, error) {
	r.track.beginWalk(baseline)
	n, err := r.src.Walk(r.handle)
	r.agg.forget(r.track.endWalk())
	r.lostConns.Store(r.track.lost)
	return n, err
}

// report walks every tracked connection: update records for the metrics
// (and the logs, if enabled), and the open count made exact. It returns
// when the next report is due: on a fixed schedule, so intervals do not
// drift by the poll delay; after a stall it starts again from now.
func (r *tcpconnReceiver) report(due, now time.Time) time.Time {
	start := time.Now()
	n, err := r.walk(false)
	if err != nil {
		r.set.Logger.Warn("report walk failed", zap.Error(err))
	}
	r.set.Logger.Debug("report walk", zap.Int("connections", n), zap.Duration("took", time.Since(start)))
	if next := due.Add(r.cfg.ReportInterval); next.After(now) {
		return next
	}
	return now.Add(r.cfg.ReportInterval)
}

func (r *tcpconnReceiver) handle(rec *bpf.Record) {
	if !r.filter.keep(rec) {
		r.filtered.Add(1)
		return
	}
	o, keep := r.track.observe(rec)
	if gone := r.track.takeEvicted(); gone != nil {
		r.evictedConns.Store(r.track.evicted)
		if r.mb != nil {
			r.agg.forget(gone)
		}
	}
	if !keep {
		return
	}
	if r.mb != nil {
		r.agg.add(rec, &o)
	}
	if r.batcher != nil && r.batcher.wants(rec) {
		if reason, drop := r.logFilter.drop(rec, &o); drop {
			r.logsFiltered[reason].Add(1)
			return
		}
		r.batcher.add(rec, &o, rec.Time)
	}
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
	md := r.agg.emit(r.mb, time.Now(), r.resource, r.recordSelfMetrics)
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

// recordSelfMetrics writes the receiver's own counters: everything read,
// dropped, filtered or lost is visible.
func (r *tcpconnReceiver) recordSelfMetrics(now pcommon.Timestamp) {
	r.mb.RecordTcpconnProbeRecordsDataPoint(now, r.recordsRead.Load())
	r.mb.RecordTcpconnRecordsFilteredDataPoint(now, r.filtered.Load())
	r.mb.RecordTcpconnConnectionsLostDataPoint(now, r.lostConns.Load())
	r.mb.RecordTcpconnConnectionsEvictedDataPoint(now, r.evictedConns.Load())
	if st, err := r.src.Stats(); err == nil {
		r.mb.RecordTcpconnProbeRecordsDroppedDataPoint(now, int64(st.Dropped))
		r.mb.RecordTcpconnProbeHandshakesUntrackedDataPoint(now, int64(st.NoState))
		r.mb.RecordTcpconnProbeEventsMissedDataPoint(now, int64(st.Missed))
	} else {
		r.set.Logger.Warn("read probe stats", zap.Error(err))
	}
	if r.batcher != nil {
		r.mb.RecordTcpconnLogsDroppedDataPoint(now, r.batcher.dropped.Load())
		for _, reason := range metadata.MapAttributeReason {
			r.mb.RecordTcpconnLogsFilteredDataPoint(now, r.logsFiltered[reason].Load(), reason)
		}
	}
}

func (r *tcpconnReceiver) sendLoop(ctx context.Context) {
	defer r.wg.Done()
	for ld := range r.batcher.queue {
		opCtx := r.obs.StartLogsOp(ctx)
		err := r.logs.ConsumeLogs(opCtx, ld)
		r.obs.EndLogsOp(opCtx, metadata.Type.String(), ld.LogRecordCount(), err)
		if err != nil {
			r.set.Logger.Warn("logs consumer refused a batch", zap.Int("records", ld.LogRecordCount()), zap.Error(err))
		}
	}
}

// Shutdown detaches the probe, delivers every record it had produced, and
// waits for all goroutines. It runs once however many pipelines share the
// receiver.
func (r *tcpconnReceiver) Shutdown(ctx context.Context) error {
	var err error
	r.shutdownOnce.Do(func() { err = r.shutdown(ctx) })
	return err
}

func (r *tcpconnReceiver) shutdown(ctx context.Context) error {
	if r.release != nil {
		r.release()
	}
	if r.src == nil {
		return nil
	}
	err := r.src.Stop()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		r.cancel()
		<-done
	}
	r.cancel()
	if r.kube != nil {
		r.kube.Stop()
	}
	return errors.Join(err, r.src.Close())
}
