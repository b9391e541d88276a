package tcpconnreceiver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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
	"github.com/tcpconn/tcpconn/natlookup"
	"github.com/tcpconn/tcpconn/podnetns"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/cidrfilter"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metricemit"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// recordSource is what the receiver needs of the probe; tests substitute
// a scripted source to drive the receiver without a kernel.
type recordSource interface {
	Read(*bpf.Record) error
	// ReadNow is Read without the wait, for draining the ring buffer
	// while a walk runs: ErrNoData at once when it is empty, ErrStopped
	// at once after Stop.
	ReadNow(*bpf.Record) error
	Walk(func(*bpf.Record)) (int, error)
	// WalkStart is the start-up walk: Walk, with the direction each
	// namespace's listening sockets tell for connections never seen open.
	WalkStart(func(*bpf.Record)) (int, error)
	CanWalk() error
	// Refused reports the connects each local address refused (cumulative).
	Refused(func(bpf.Refused)) error
	// Listen reports each network namespace's listener counters
	// (cumulative), as the last walk read them.
	Listen(func(bpf.ListenStats)) error
	// Backlogs reports each listening socket's accept queue, as the last
	// walk saw it.
	Backlogs(func(bpf.Backlog))
	Stop() error
	Close() error
	Stats() (bpf.Stats, error)
}

type tcpconnReceiver struct {
	set     receiver.Settings
	cfg     *Config
	open    func(bpf.Options) (recordSource, error)
	host    component.Host
	release func()
	obs     *receiverhelper.ObsReport

	metrics consumer.Metrics
	logs    consumer.Logs

	resolver identity.Resolver
	kube     *kube.Recovering
	src      recordSource
	// nat looks translated Service destinations up in conntrack; nil when
	// off or unavailable.
	nat       natConn
	natFailed int64 // lookup failures already logged
	// netns knows which pod each network namespace belongs to; nil when
	// off (kubernetes.local_by_netns).
	netns *podnetns.Scanner
	// hostNetNS finds the node's own network namespace (nat.netns: host,
	// the node's addresses); tests substitute one of their own. hostNS is
	// what it found at start, or hostNSErr why nothing.
	hostNetNS func() (string, error)
	hostNS    string
	hostNSErr error
	// nodeAddrsErr is the last failure to read the node's addresses,
	// logged once.
	nodeAddrsErr string
	// identityState is the state of Kubernetes identity, a
	// metadata.AttributeState, for tcpconn.identity.status.
	identityState atomic.Int32

	// The data path, owned by the reader goroutine (agg is shared with the
	// flusher under its own lock).
	pipeline
	selfCounters

	// feed hands the report walks' records to the reader (follow).
	feed *walkFeed

	startOnce    sync.Once
	startErr     error
	shutdownOnce sync.Once
	cancel       context.CancelFunc
	readerDone   chan struct{}
	wg           sync.WaitGroup
}

// pipeline is every stage a record passes; a nil stage is off.
type pipeline struct {
	filter    cidrfilter.Filter
	track     *conntable.Table
	agg       *aggregate.Aggregator
	emitter   *metricemit.Emitter
	batcher   *accesslog.Batcher
	logFilter accesslog.Filter
	// refused: the probe's refused-connect counts at the previous walk.
	refused map[refusedKey]uint64
	// listen: each namespace's listener counters at the previous walk.
	listen map[uint32]bpf.ListenStats
	// project keys a listener in the workload view (nil without one);
	// backlogs are the accept queues of the last walk, for the flusher.
	project    aggregate.Project
	backlogsMu sync.Mutex
	backlogs   []metricemit.Backlog
}

type refusedKey struct {
	netns uint32
	addr  netip.Addr
}

func newReceiver(set receiver.Settings, cfg *Config, release func()) *tcpconnReceiver {
	r := &tcpconnReceiver{
		set:       set,
		cfg:       cfg,
		open:      openProbe,
		resolver:  identity.AddressOnly{},
		release:   release,
		hostNetNS: func() (string, error) { return podnetns.HostNetNS("/proc") },
	}
	// Enabled, identity is degraded until the resolver says otherwise:
	// nothing is synchronised yet.
	r.setIdentityState(metadata.AttributeStateDisabled)
	if cfg.Kubernetes.Enabled {
		r.setIdentityState(metadata.AttributeStateDegraded)
	}
	return r
}

func (r *tcpconnReceiver) setIdentityState(s metadata.AttributeState) {
	r.identityState.Store(int32(s))
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
	logAttached(r.set.Logger, src)
	if r.cfg.Kubernetes.Enabled {
		r.hostNS, r.hostNSErr = r.hostNetNS()
		r.startKubernetes()
		if r.cfg.NAT.Enabled {
			r.openNAT()
		}
	}
	r.wire(time.Now())

	// Background work outlives Start's context: derive from Background.
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.readerDone = make(chan struct{})
	r.wg.Add(1)
	go r.readLoop()
	if r.emitter != nil {
		r.wg.Add(1)
		go r.flushLoop(ctx)
	}
	if r.batcher != nil {
		r.wg.Add(1)
		go r.sendLoop(ctx)
	}
	return nil
}

// wire builds the data path for the signals that have a consumer.
func (r *tcpconnReceiver) wire(started time.Time) {
	resource, self := r.resources()
	r.filter = cidrfilter.New(r.cfg.Filter)
	r.track = conntable.New(r.resolver, r.cfg.AdoptExisting, r.cfg.CountAdoptedBytes)
	if r.nat != nil {
		r.track.SetNAT(r.nat)
	}
	if r.netns != nil {
		r.track.SetLocal(&localByNetNS{owners: r.netns, pods: r.kube, addrs: r.resolver, node: r.cfg.Kubernetes.NodeName})
	}
	if r.logs != nil {
		r.batcher = accesslog.NewBatcher(r.cfg.Logs, resource)
		r.logFilter = accesslog.NewFilter(r.cfg.Logs)
	}
	if r.metrics != nil {
		prof := profile.New(r.cfg.profileOptions())
		r.agg = aggregate.New(prof.Specs(), r.cfg.limits())
		for _, v := range prof.Views {
			if v.Kind == aggregate.ViewWorkload && prof.RecordBacklog != nil {
				r.project = v.Project
			}
		}
		mb := metadata.NewMetricsBuilder(r.cfg.MetricsBuilderConfig, r.set, metadata.WithStartTime(pcommon.NewTimestampFromTime(started)))
		r.emitter = metricemit.New(mb, prof, metricemit.Options{
			Delta: r.cfg.Temporality == TemporalityDelta, Started: started, Version: r.set.BuildInfo.Version, Resource: resource, Self: self,
			Chunk: emitChunk(&r.cfg.MetricsBuilderConfig),
		})
	}
}

// resources are the receiver's Resource (the node: host.name and
// k8s.node.name) and the Resource of what the collector reports of itself:
// that plus the collector's own service.name and service.instance.id (its
// service::telemetry::resource), so Prometheus's job and instance tell an
// agent from a gateway and from the workloads it reports on.
func (r *tcpconnReceiver) resources() (resource, self pcommon.Resource) {
	rb := metadata.NewResourceBuilder(r.cfg.ResourceAttributes)
	// In a pod the hostname is the pod's name, not the node's.
	if node := r.cfg.Kubernetes.NodeName; node != "" {
		rb.SetHostName(node)
		rb.SetK8sNodeName(node)
	} else if host, err := os.Hostname(); err == nil {
		rb.SetHostName(host)
	}
	resource = rb.Emit()
	self = pcommon.NewResource()
	resource.CopyTo(self)
	for _, k := range []string{"service.name", "service.instance.id"} {
		if v, ok := r.set.Resource.Attributes().Get(k); ok {
			self.Attributes().PutStr(k, v.AsString())
		}
	}
	return resource, self
}

// startKubernetes starts the identity resolver. Without API access, or
// before its client can even be built (no kubeconfig or token yet), the
// receiver runs with address-only identity and reports a recoverable
// error through component status; the client is built with backoff and
// the informers relist until the API answers, then status returns to OK.
func (r *tcpconnReceiver) startKubernetes() {
	r.kube = kube.NewRecovering(r.cfg.Kubernetes, kube.Options{OnHealth: r.kubeHealth})
	r.resolver = r.kube
	r.kube.Start()
	if r.cfg.Kubernetes.LocalByNetNS {
		r.netns = podnetns.NewScanner()
	}
	if r.cfg.Kubernetes.NodeName != "" && r.hostNSErr != nil {
		r.set.Logger.Warn("the node's own network namespace cannot be read: connections from the node's addresses that its Node object does not list (a CNI bridge's, whence kubelet probes pods) have an unknown peer",
			zap.Error(r.hostNSErr))
	}
}

// natConn is a conntrack lookup the receiver closes at shutdown.
type natConn interface {
	natlookup.Lookup
	Close() error
}

// openNAT connects to the conntrack table where the node translates
// Service addresses. Without it (no CAP_NET_ADMIN, no conntrack) the
// receiver runs on and connections to a ClusterIP name the Service only.
func (r *tcpconnReceiver) openNAT() {
	const off = "conntrack lookups of Service destinations are off: connections to a ClusterIP name the Service, not the backend reached"
	path := r.cfg.NAT.NetNS
	if path == NetNSHost {
		if r.hostNSErr != nil {
			r.set.Logger.Warn(off, zap.String("nat.netns", NetNSHost), zap.Error(r.hostNSErr))
			return
		}
		path = r.hostNS
	}
	ct, err := natlookup.Open(path)
	if err != nil {
		r.set.Logger.Warn(off, zap.String("nat.netns", r.cfg.NAT.NetNS), zap.Error(err))
		return
	}
	r.set.Logger.Debug("conntrack lookups of Service destinations", zap.String("netns", path))
	r.nat = ct
}

// logNATFailures reports conntrack lookups that failed since the last call.
func (r *tcpconnReceiver) logNATFailures() {
	lookups, failed, last := r.track.NATStats()
	if failed > r.natFailed {
		r.set.Logger.Warn("conntrack lookups of Service destinations failed", zap.Int64("failed", failed-r.natFailed), zap.Int64("lookups", lookups), zap.Error(last))
		r.natFailed = failed
	}
}

// kubeHealth hears the resolver's health and tells it in the log, the
// component status and tcpconn.identity.status. Off (no client: no
// service-account token, no kubeconfig) and degraded (the API server away)
// are both recoverable errors, not permanent ones: kube.Recovering goes on
// trying, and a token mounted late or an API server back makes identity
// whole again, which a permanent error, final in the collector's status
// model, could never report.
func (r *tcpconnReceiver) kubeHealth(err error) {
	switch {
	case errors.Is(err, kube.ErrNoClient):
		r.setIdentityState(metadata.AttributeStateOff)
		r.set.Logger.Warn("Kubernetes identity off: every connection end is reported by its address until the client can be built", zap.Error(err))
		componentstatus.ReportStatus(r.host, componentstatus.NewRecoverableErrorEvent(err))
	case err != nil:
		r.setIdentityState(metadata.AttributeStateDegraded)
		r.set.Logger.Warn("Kubernetes identity degraded: known identities are kept, new pods are unknown until the API server answers", zap.Error(err))
		componentstatus.ReportStatus(r.host, componentstatus.NewRecoverableErrorEvent(err))
	default:
		r.setIdentityState(metadata.AttributeStateOk)
		r.set.Logger.Info("Kubernetes identity synchronised")
		componentstatus.ReportStatus(r.host, componentstatus.NewEvent(componentstatus.StatusOK))
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
	if r.nat != nil {
		err = errors.Join(err, r.nat.Close())
	}
	return errors.Join(err, r.src.Close())
}

// emitChunk is how many series share one ResourceMetrics in a flush (see
// metricemit.Options.Chunk): none when the configuration narrowed a
// metric's attributes, so series that become one data point stay together.
func emitChunk(mc *metadata.MetricsBuilderConfig) int {
	if profile.Narrowed(mc) {
		return 0
	}
	return 64
}
