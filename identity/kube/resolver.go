// Package kube resolves connection ends to Kubernetes identities from
// client-go shared informers: pods (with their workload, service account
// and labels), services, EndpointSlices, ReplicaSets, Jobs and nodes. It
// knows nothing of eBPF or pdata.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tcpconn/tcpconn/identity"
)

// Options tune the resolver's background work; zero values take defaults.
type Options struct {
	// Debounce is how long changes accumulate before the index is rebuilt.
	Debounce time.Duration
	// HealthInterval is how often the API server is checked.
	HealthInterval time.Duration
	// OnHealth is called with nil when the API server is reachable and the
	// caches are synced, and with the error when it is not. It is called on
	// every change of state, from the resolver's goroutine.
	OnHealth func(error)
	// Now is the clock (tests).
	Now func() time.Time
}

// Resolver implements identity.Resolver from the informer caches.
type Resolver struct {
	cfg    Config
	opts   Options
	client kubernetes.Interface

	factory  informers.SharedInformerFactory
	pods     corelisters.PodLister
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	rsets    appslisters.ReplicaSetLister
	jobs     batchlisters.JobLister
	nodes    corelisters.NodeLister
	synced   []cache.InformerSynced

	snap  atomic.Pointer[snapshot]
	dirty chan struct{}

	mu         sync.Mutex
	tombstones map[string]*podEntry // by pod UID
	local      localNode

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var (
	_ identity.Resolver        = (*Resolver)(nil)
	_ identity.BackendResolver = (*Resolver)(nil)
	_ identity.PodResolver     = (*Resolver)(nil)
)

// New creates a resolver on client. Start begins watching.
func New(client kubernetes.Interface, cfg Config, opts Options) *Resolver {
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = 5 * time.Second
	}
	if opts.OnHealth == nil {
		opts.OnHealth = func(error) {}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Resolver{cfg: cfg, opts: opts, client: client, dirty: make(chan struct{}, 1), tombstones: map[string]*podEntry{}}
	r.snap.Store(&snapshot{})

	r.factory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(transform))
	pods := r.factory.Core().V1().Pods()
	services := r.factory.Core().V1().Services()
	slices := r.factory.Discovery().V1().EndpointSlices()
	rsets := r.factory.Apps().V1().ReplicaSets()
	jobs := r.factory.Batch().V1().Jobs()
	nodes := r.factory.Core().V1().Nodes()
	r.pods, r.services, r.slices = pods.Lister(), services.Lister(), slices.Lister()
	r.rsets, r.jobs, r.nodes = rsets.Lister(), jobs.Lister(), nodes.Lister()

	changed := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.markDirty() },
		UpdateFunc: func(any, any) { r.markDirty() },
		DeleteFunc: func(any) { r.markDirty() },
	}
	for _, inf := range []cache.SharedIndexInformer{services.Informer(), slices.Informer(), rsets.Informer(), jobs.Informer(), nodes.Informer()} {
		_, _ = inf.AddEventHandler(changed)
		r.synced = append(r.synced, inf.HasSynced)
	}
	_, _ = pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.markDirty() },
		UpdateFunc: func(any, any) { r.markDirty() },
		DeleteFunc: r.podDeleted,
	})
	r.synced = append(r.synced, pods.Informer().HasSynced)
	return r
}

// Resolve returns who held addr:port at time at, or nil when unknown.
func (r *Resolver) Resolve(addr netip.Addr, port uint16, at time.Time, role identity.Role) *identity.Identity {
	return r.snap.Load().resolve(addr, port, at, role)
}

// ResolveBackend returns who held addr:port at time at, as the backend of
// service (identity.BackendResolver).
func (r *Resolver) ResolveBackend(service *identity.Identity, addr netip.Addr, port uint16, at time.Time) *identity.Identity {
	return r.snap.Load().resolveBackend(service, addr, port, at)
}

// ResolvePod returns the pod with this UID as an end on port in role
// (identity.PodResolver).
func (r *Resolver) ResolvePod(uid string, port uint16, role identity.Role) *identity.Identity {
	return r.snap.Load().resolvePod(uid, port, role)
}

// ResolveNode returns the node of this name (identity.PodResolver).
func (r *Resolver) ResolveNode(name string) *identity.Identity {
	return r.snap.Load().nodeByName[name]
}

// SetLocalNodeAddresses names addrs as addresses of the node called node
// (the one this resolver runs on), replacing those of the previous call.
// They are the addresses the node's own interfaces hold, which its Node
// object need not list: a CNI bridge's gateway address, from which
// kubelet's probes reach the pods, is in no status.addresses. An address
// the API gives a pod, another node or a Service keeps that meaning (under
// kube-proxy's IPVS mode the node holds every ClusterIP), and loopback
// addresses are left out: every network namespace has its own. The
// addresses name the node once its Node object is known. A change
// rebuilds the index; the same addresses again cost nothing.
func (r *Resolver) SetLocalNodeAddresses(node string, addrs []netip.Addr) {
	l := newLocalNode(node, addrs)
	r.mu.Lock()
	changed := !l.equal(r.local)
	r.local = l
	r.mu.Unlock()
	if changed {
		r.markDirty()
	}
}

// Start begins watching the API server. It does not wait for the caches:
// until they sync, lookups answer nil and OnHealth reports why.
func (r *Resolver) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.factory.Start(ctx.Done())
	r.wg.Add(2)
	go r.rebuildLoop(ctx)
	go r.healthLoop(ctx)
}

// Stop ends every goroutine the resolver started.
func (r *Resolver) Stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	r.factory.Shutdown()
}

// Synced reports whether every informer has listed once.
func (r *Resolver) Synced() bool {
	for _, s := range r.synced {
		if !s() {
			return false
		}
	}
	return true
}

func (r *Resolver) markDirty() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// podDeleted keeps a deleted pod for the grace period, so connections
// that started while it held its IP are still attributed to it.
func (r *Resolver) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	now := r.opts.Now()
	var tomb podEntry
	if e := r.snap.Load().byUID[p.UID]; e != nil {
		tomb = *e
	} else {
		ips := podIPs(p)
		if len(ips) == 0 {
			r.markDirty()
			return
		}
		tomb = podEntry{uid: p.UID, start: p.CreationTimestamp.Time, end: podEnd(p), id: podIdentity(p, r, r.snap.Load().zones[p.Spec.NodeName], &r.cfg), ips: ips}
		if p.Spec.HostNetwork {
			tomb.ports = declaredPorts(p)
		}
	}
	if tomb.end.IsZero() || now.Before(tomb.end) {
		tomb.end = now // a finished pod keeps the earlier end: when it finished
	}
	r.mu.Lock()
	r.tombstones[string(p.UID)] = &tomb
	r.mu.Unlock()
	r.markDirty()
}

func (r *Resolver) rebuildLoop(ctx context.Context) {
	defer r.wg.Done()
	expire := time.NewTicker(max(r.cfg.PodGracePeriod/4, time.Second))
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expire.C:
			if r.expireTombstones() {
				r.rebuild()
			}
			continue
		case <-r.dirty:
		}
		// Let a burst of changes land in one rebuild.
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.opts.Debounce):
		}
		if r.Synced() {
			r.rebuild()
		}
	}
}

func (r *Resolver) expireTombstones() bool {
	cutoff := r.opts.Now().Add(-r.cfg.PodGracePeriod)
	r.mu.Lock()
	defer r.mu.Unlock()
	removed := false
	for uid, t := range r.tombstones {
		if t.end.Before(cutoff) {
			delete(r.tombstones, uid)
			removed = true
		}
	}
	return removed
}

// rebuild makes a new snapshot from the caches and publishes it.
func (r *Resolver) rebuild() {
	src := sources{owners: r}
	var errs []error
	var err error
	src.pods, err = r.pods.List(labels.Everything())
	errs = append(errs, err)
	src.services, err = r.services.List(labels.Everything())
	errs = append(errs, err)
	src.slices, err = r.slices.List(labels.Everything())
	errs = append(errs, err)
	src.nodes, err = r.nodes.List(labels.Everything())
	errs = append(errs, err)
	if errors.Join(errs...) != nil {
		return
	}
	r.mu.Lock()
	for _, t := range r.tombstones {
		src.tombstones = append(src.tombstones, t)
	}
	src.local = r.local
	r.mu.Unlock()
	r.snap.Store(buildSnapshot(src, &r.cfg))
}

func (r *Resolver) replicaSetOwner(namespace, name string) *metav1.OwnerReference {
	rs, err := r.rsets.ReplicaSets(namespace).Get(name)
	if err != nil {
		return nil
	}
	return metav1.GetControllerOf(rs)
}

func (r *Resolver) jobOwner(namespace, name string) *metav1.OwnerReference {
	j, err := r.jobs.Jobs(namespace).Get(name)
	if err != nil {
		return nil
	}
	return metav1.GetControllerOf(j)
}

// healthLoop reports, on every change, whether the API server answers and
// the caches are synced. The informers reconnect and relist by themselves;
// this loop only observes.
func (r *Resolver) healthLoop(ctx context.Context) {
	defer r.wg.Done()
	var last error
	first := true
	for {
		err := r.check(ctx)
		if ctx.Err() != nil {
			return
		}
		if first || (err == nil) != (last == nil) {
			r.opts.OnHealth(err)
			if err == nil {
				r.markDirty() // resynchronised: rebuild from the fresh caches
			}
		}
		first, last = false, err
		// While unhealthy, look again soon: recovery is news worth having.
		wait := r.opts.HealthInterval
		if err != nil {
			wait = min(wait, 250*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (r *Resolver) check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := r.client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(cctx).Error(); err != nil {
		return fmt.Errorf("kubernetes API server not reachable: %w", err)
	}
	if !r.Synced() {
		return errors.New("kubernetes caches not synced yet")
	}
	return nil
}
