package tcpconnreceiver

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// statusHost records the component status the receiver reports.
type statusHost struct {
	mu     sync.Mutex
	events []*componentstatus.Event
}

func (h *statusHost) GetExtensions() map[component.ID]component.Component { return nil }

func (h *statusHost) Report(e *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *statusHost) last() *componentstatus.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) == 0 {
		return nil
	}
	return h.events[len(h.events)-1]
}

// unreachableKubeconfig writes a kubeconfig of an API server nobody
// answers on.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))
	return kubeconfig
}

// Without a reachable API server the receiver runs, with addresses only,
// and says so through component status; Shutdown stops the informers
// (goleak in TestMain).
func TestKubernetesUnreachableReportsDegraded(t *testing.T) {
	t.Setenv("KUBECONFIG", unreachableKubeconfig(t))

	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType = true, kube.AuthKubeConfig
	r, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	require.NoError(t, err)
	src := &scriptedSource{}
	r.(*tcpconnReceiver).open = func(bpf.Options) (recordSource, error) { return src, nil }
	host := &statusHost{}
	require.NoError(t, r.Start(context.Background(), host), "the receiver runs without the API")
	require.Eventually(t, func() bool {
		e := host.last()
		return e != nil && e.Status() == componentstatus.StatusRecoverableError
	}, 10*time.Second, 10*time.Millisecond, "degraded status not reported")
	assert.Contains(t, host.last().Err().Error(), "kubernetes")
	src.push(fixedRecords()...)
	require.Eventually(t, func() bool { return r.(*tcpconnReceiver).recordsRead.Load() > 0 }, 5*time.Second, time.Millisecond, "records are still read")
	require.NoError(t, r.Shutdown(context.Background()))
}

// identityStatus is tcpconn.identity.status in the last flush: the state
// whose point is 1, "" when no flush had it or not exactly one point is 1.
func identityStatus(sink *consumertest.MetricsSink) string {
	all := sink.AllMetrics()
	if len(all) == 0 {
		return ""
	}
	var states []string
	forEachMetric(all[len(all)-1], func(m pmetric.Metric) {
		if m.Name() != "tcpconn.identity.status" {
			return
		}
		for i := range m.Gauge().DataPoints().Len() {
			p := m.Gauge().DataPoints().At(i)
			if p.IntValue() == 1 {
				s, _ := p.Attributes().Get("state")
				states = append(states, s.Str())
			}
		}
	})
	if len(states) != 1 {
		return ""
	}
	return states[0]
}

// TestIdentityStatusMetric: tcpconn.identity.status says degraded while
// the API server is away at start, ok once it is back; off when no
// client can be built (no kubeconfig: the receiver runs with addresses
// only); disabled without kubernetes.enabled. Component status follows.
func TestIdentityStatusMetric(t *testing.T) {
	start := func(t *testing.T, enabled bool) (*consumertest.MetricsSink, *statusHost, func()) {
		t.Helper()
		cfg := createDefaultConfig()
		cfg.FlushInterval, cfg.ReportInterval = 20*time.Millisecond, 0
		cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType = enabled, kube.AuthKubeConfig
		sink := new(consumertest.MetricsSink)
		r, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
		require.NoError(t, err)
		r.(*tcpconnReceiver).open = func(bpf.Options) (recordSource, error) { return &scriptedSource{}, nil }
		host := &statusHost{}
		require.NoError(t, r.Start(context.Background(), host))
		return sink, host, func() { require.NoError(t, r.Shutdown(context.Background())) }
	}
	status := func(h *statusHost) componentstatus.Status {
		if e := h.last(); e != nil {
			return e.Status()
		}
		return componentstatus.StatusNone
	}

	t.Run("API server away at start, then back", func(t *testing.T) {
		api := kubetest.Start(t)
		kubeconfig, err := api.WriteKubeconfig(t.TempDir())
		require.NoError(t, err)
		t.Setenv("KUBECONFIG", kubeconfig)
		api.StopAPIServer()
		sink, host, stop := start(t, true)
		defer stop()
		require.Eventually(t, func() bool {
			return identityStatus(sink) == "degraded" && status(host) == componentstatus.StatusRecoverableError
		}, 10*time.Second, 10*time.Millisecond, "not degraded while the API server is away: %q", identityStatus(sink))
		time.Sleep(300 * time.Millisecond) // the resolver has looked again: still away
		assert.Equal(t, "degraded", identityStatus(sink))
		require.NoError(t, api.StartAPIServer())
		require.Eventually(t, func() bool {
			return identityStatus(sink) == "ok" && status(host) == componentstatus.StatusOK
		}, 60*time.Second, 20*time.Millisecond, "not ok once the API server is back: %q", identityStatus(sink))
	})
	t.Run("no client", func(t *testing.T) {
		t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "kubeconfig")) // never written
		sink, host, stop := start(t, true)
		defer stop()
		require.Eventually(t, func() bool {
			return identityStatus(sink) == "off" && status(host) == componentstatus.StatusRecoverableError
		}, 10*time.Second, 10*time.Millisecond, "not off without a client: %q", identityStatus(sink))
		assert.ErrorIs(t, host.last().Err(), kube.ErrNoClient)
	})
	t.Run("disabled", func(t *testing.T) {
		sink, _, stop := start(t, false)
		defer stop()
		require.Eventually(t, func() bool { return identityStatus(sink) == "disabled" }, 10*time.Second, 10*time.Millisecond,
			"not disabled: %q", identityStatus(sink))
	})
}
