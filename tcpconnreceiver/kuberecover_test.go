package tcpconnreceiver

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// TestKubernetesRecoversWhenTheAPIServerComesLater: the receiver starts
// before it can even build its Kubernetes client (the kubeconfig does not
// exist yet) and while the real API server is down. It runs with
// addresses only and reports degraded; the kubeconfig appears (the client
// is built on a later attempt), then the API server starts: status
// returns to OK and connections get their identities, including one that
// was open all along (its unresolved ends are tried again).
func TestKubernetesRecoversWhenTheAPIServerComesLater(t *testing.T) {
	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("web", "frontend")
	obj.Namespace("shop", "checkout")
	client, server := netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.1")
	obj.Pod(kubetest.PodSpec{Namespace: "web", Name: "frontend-7c9d5-abcde", ServiceAccount: "frontend",
		IP: client.String(), Labels: map[string]string{"app": "frontend"}, Owner: ptr(obj.Deployment("web", "frontend"))})
	checkout := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "checkout-5d8f-xyz12", ServiceAccount: "checkout",
		IP: server.String(), Labels: map[string]string{"app": "checkout"}, Owner: ptr(obj.Deployment("shop", "checkout"))})
	obj.Service("shop", "checkout", "", 80, 8080, checkout)
	api.StopAPIServer()
	dir := t.TempDir()
	t.Setenv("KUBECONFIG", filepath.Join(dir, "kubeconfig")) // not written yet

	cfg := createDefaultConfig()
	cfg.FlushInterval, cfg.ReportInterval = time.Hour, 0
	cfg.Logs.Open, cfg.Logs.FlushInterval = true, 10*time.Millisecond
	cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType = true, kube.AuthKubeConfig
	logs := new(consumertest.LogsSink)
	lr, err := NewFactory().CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, logs)
	require.NoError(t, err)
	src := &scriptedSource{}
	lr.(*tcpconnReceiver).open = func(bpf.Options) (recordSource, error) { return src, nil }
	host := &statusHost{}
	require.NoError(t, lr.Start(context.Background(), host))
	status := func() componentstatus.Status {
		if e := host.last(); e != nil {
			return e.Status()
		}
		return componentstatus.StatusNone
	}
	require.Eventually(t, func() bool { return status() == componentstatus.StatusRecoverableError }, 10*time.Second, 10*time.Millisecond)
	assert.Contains(t, host.last().Err().Error(), "kubeConfig", "the client cannot be built yet")

	recs := fixedRecords()
	conn := func(i int, id uint64) bpf.Record {
		r := recs[i]
		r.ConnID, r.Start = id, time.Now()
		if r.Direction == bpf.DirectionOutbound {
			r.LocalAddr, r.PeerAddr = client, server
		} else {
			r.LocalAddr, r.PeerAddr = server, client
		}
		return r
	}
	early := conn(0, 10) // outbound open, resolved by nobody
	src.push(early)

	_, err = api.WriteKubeconfig(dir)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return lr.(*tcpconnReceiver).kube.Resolver() != nil }, 30*time.Second, 10*time.Millisecond,
		"the client is built once the kubeconfig exists")
	assert.Equal(t, componentstatus.StatusRecoverableError, status(), "still degraded: the API server is down")

	require.NoError(t, api.StartAPIServer())
	require.Eventually(t, func() bool { return status() == componentstatus.StatusOK }, 60*time.Second, 20*time.Millisecond,
		"status OK once the API server answers")
	time.Sleep(300 * time.Millisecond) // the first index build follows the sync

	late := conn(0, 11)
	earlyClose := conn(2, 10)
	earlyClose.LocalAddr, earlyClose.PeerAddr = client, server
	src.push(late, earlyClose)
	require.Eventually(t, func() bool { return logs.LogRecordCount() >= 3 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, lr.Shutdown(context.Background()))

	got := map[string]string{}
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		key := lr.EventName() + "/" + map[int64]string{10: "early", 11: "late"}[a["tcpconn.connection.id"].(int64)]
		dst, _ := a["destination.workload.name"].(string)
		src, _ := a["source.workload.name"].(string)
		got[key] = src + "->" + dst
	})
	assert.Equal(t, map[string]string{
		"tcp.connection.open/early":  "->",                 // before the API answered
		"tcp.connection.open/late":   "frontend->checkout", // after
		"tcp.connection.close/early": "frontend->checkout", // its ends tried again
	}, got)
}
