package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/tcpconn/tcpconn/identity"
)

// ErrNoClient wraps the reasons Recovering reports while it cannot build
// its client: nothing can be resolved then, not even what a resolver that
// lost its API server would still know.
var ErrNoClient = errors.New("kubernetes client not built yet, retrying")

// Recovering is a Resolver that does not need the API server, nor its
// credentials, at start: it builds its client (NewClient) with exponential
// backoff until it can (a kubeconfig or service-account token that appears
// later, an environment filled in late), then runs a Resolver on it, whose
// informers list and relist by themselves while the API server is away.
// Until then every lookup answers nil and OnHealth is told why (an
// ErrNoClient).
type Recovering struct {
	cfg       Config
	opts      Options
	newClient func(Config) (kubernetes.Interface, error)
	// MinBackoff and MaxBackoff bound the wait between attempts to build
	// the client.
	minBackoff, maxBackoff time.Duration

	res atomic.Pointer[Resolver]
	// mu orders SetLocalNodeAddresses with the resolver's start, so the
	// latest addresses reach it whichever comes first.
	mu     sync.Mutex
	local  *localNode
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var (
	_ identity.Resolver        = (*Recovering)(nil)
	_ identity.BackendResolver = (*Recovering)(nil)
)

// NewRecovering returns a resolver that builds its client from cfg once
// started. opts.OnHealth hears the failures to build it as well as the
// resolver's own health.
func NewRecovering(cfg Config, opts Options) *Recovering {
	if opts.OnHealth == nil {
		opts.OnHealth = func(error) {}
	}
	return &Recovering{cfg: cfg, opts: opts, newClient: NewClient, minBackoff: 250 * time.Millisecond, maxBackoff: 30 * time.Second}
}

// Resolve implements identity.Resolver; nil until the client is built.
func (r *Recovering) Resolve(addr netip.Addr, port uint16, at time.Time, role identity.Role) *identity.Identity {
	if res := r.res.Load(); res != nil {
		return res.Resolve(addr, port, at, role)
	}
	return nil
}

// ResolveBackend implements identity.BackendResolver.
func (r *Recovering) ResolveBackend(service *identity.Identity, addr netip.Addr, port uint16, at time.Time) *identity.Identity {
	if res := r.res.Load(); res != nil {
		return res.ResolveBackend(service, addr, port, at)
	}
	return nil
}

// ResolvePod implements identity.PodResolver.
func (r *Recovering) ResolvePod(uid string, port uint16, role identity.Role) *identity.Identity {
	if res := r.res.Load(); res != nil {
		return res.ResolvePod(uid, port, role)
	}
	return nil
}

// ResolveNode implements identity.PodResolver.
func (r *Recovering) ResolveNode(name string) *identity.Identity {
	if res := r.res.Load(); res != nil {
		return res.ResolveNode(name)
	}
	return nil
}

// SetLocalNodeAddresses implements Resolver.SetLocalNodeAddresses; before
// the client is built the addresses are kept for the resolver to come.
func (r *Recovering) SetLocalNodeAddresses(node string, addrs []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.local = &localNode{name: node, addrs: slices.Clone(addrs)}
	if res := r.res.Load(); res != nil {
		res.SetLocalNodeAddresses(node, addrs)
	}
}

// Start builds the client in the background, retrying with backoff, and
// starts the resolver on it.
func (r *Recovering) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go r.build(ctx)
}

func (r *Recovering) build(ctx context.Context) {
	defer r.wg.Done()
	wait := r.minBackoff
	var last string
	for {
		client, err := r.newClient(r.cfg)
		if err == nil {
			res := New(client, r.cfg, r.opts)
			r.mu.Lock()
			if r.local != nil {
				res.SetLocalNodeAddresses(r.local.name, r.local.addrs)
			}
			res.Start()
			r.res.Store(res)
			r.mu.Unlock()
			return
		}
		if err.Error() != last { // each new reason once, not every attempt
			last = err.Error()
			r.opts.OnHealth(fmt.Errorf("%w: %w", ErrNoClient, err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, r.maxBackoff)
	}
}

// Stop ends the attempts and the resolver's goroutines.
func (r *Recovering) Stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
	if res := r.res.Load(); res != nil {
		res.Stop()
	}
}

// Resolver is the resolver once the client is built, else nil.
func (r *Recovering) Resolver() *Resolver { return r.res.Load() }
