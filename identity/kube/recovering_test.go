package kube

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The client cannot be built at first: the reason is reported once, the
// attempts go on with backoff, and once it builds the resolver runs on it,
// with the node's addresses given before.
func TestRecoveringBuildsTheClientLater(t *testing.T) {
	var mu sync.Mutex
	var reasons []string
	var noClient []bool // errors.Is(reason, ErrNoClient)
	attempts := 0
	r := NewRecovering(DefaultConfig(), Options{OnHealth: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			reasons = append(reasons, err.Error())
			noClient = append(noClient, errors.Is(err, ErrNoClient))
		}
	}})
	r.minBackoff, r.maxBackoff = time.Millisecond, 4*time.Millisecond
	r.newClient = func(Config) (kubernetes.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts < 5 {
			return nil, errors.New("kubernetes auth_type serviceAccount: unable to load in-cluster configuration")
		}
		// A server nobody answers on: the resolver runs, unsynced.
		return kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1", TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	}
	assert.Nil(t, r.Resolve(netip.MustParseAddr("10.0.0.1"), 80, time.Now(), 0), "nothing known before the client")
	bridge := netip.MustParseAddr("10.0.0.1")
	r.SetLocalNodeAddresses("node-a", []netip.Addr{bridge})
	r.Start()
	require.Eventually(t, func() bool { return r.Resolver() != nil }, 5*time.Second, time.Millisecond)
	r.Stop()
	res := r.Resolver()
	res.mu.Lock()
	assert.Equal(t, newLocalNode("node-a", []netip.Addr{bridge}), res.local, "the addresses given before the client")
	res.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 5, attempts)
	// Then the resolver's own health may follow (its API server is away).
	require.NotEmpty(t, reasons)
	assert.Equal(t, "kubernetes client not built yet, retrying: kubernetes auth_type serviceAccount: unable to load in-cluster configuration", reasons[0])
	assert.True(t, noClient[0], "no client: ErrNoClient")
	if len(reasons) > 1 {
		assert.Len(t, reasons, 2, "each reason once: %q", reasons)
		assert.Contains(t, reasons[1], "not reachable")
		assert.False(t, noClient[1], "the resolver's own health: not ErrNoClient")
	}
}

func TestRecoveringStopsWhileRetrying(t *testing.T) {
	r := NewRecovering(DefaultConfig(), Options{})
	r.newClient = func(Config) (kubernetes.Interface, error) { return nil, errors.New("no") }
	r.Start()
	time.Sleep(10 * time.Millisecond)
	r.Stop()
	assert.Nil(t, r.Resolver())
}

func TestAuthNoneNeedsExplicitInsecure(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AuthType = AuthNone
	require.ErrorContains(t, cfg.Validate("kubernetes."), "kubernetes.auth_type: none does not verify the API server's certificate: set kubernetes.insecure_skip_tls_verify: true")
	_, err := NewClient(cfg)
	require.ErrorContains(t, err, "needs insecure_skip_tls_verify: true")
	cfg.InsecureSkipTLSVerify = true
	require.NoError(t, cfg.Validate("kubernetes."))
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	_, err = NewClient(cfg)
	require.NoError(t, err)

	cfg.AuthType = AuthServiceAccount
	require.ErrorContains(t, cfg.Validate("kubernetes."), "kubernetes.insecure_skip_tls_verify: only with auth_type none")
}
