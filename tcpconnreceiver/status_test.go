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
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity/kube"
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
