package e2e

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestPipelineKubernetesIdentity: two network namespaces stand in for two
// pods whose IPs a real API server knows; real traffic through the probe and
// the ocb-built collector must come out with both ends' workloads,
// namespaces, principals and the destination service.
func TestPipelineKubernetesIdentity(t *testing.T) {
	const (
		conns    = 2
		request  = 3000
		response = 700
		port     = 8080
	)
	pair := netnstest.NewPair(t, testOctet)
	kubeconfig := startShop(t, pair, port)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.json")
	prom := freePort(t)
	col := startCollector(t, filepath.Join("testdata", "identity.yaml"), map[string]string{
		"TEST_CIDR":        pair.ServerIP.String() + "/24",
		"TEST_OUT":         out,
		"TEST_PROM_PORT":   strconv.Itoa(prom),
		"TEST_HEALTH_PORT": strconv.Itoa(freePort(t)),
		"KUBECONFIG":       kubeconfig,
	})
	require.Eventually(t, func() bool { return strings.Contains(col.output(), "Kubernetes identity synchronised") },
		30*time.Second, 50*time.Millisecond, "resolver never synchronised")
	time.Sleep(200 * time.Millisecond) // the first index build follows the sync

	srv := netnstest.StartServer(t, pair, port, request, response)
	for range conns {
		_, err := srv.Exchange(context.Background(), pair)
		require.NoError(t, err)
	}

	var exp string
	require.Eventually(t, func() bool {
		var err error
		exp, err = scrape(context.Background(), prom)
		return err == nil && sample(exp, "tcp_connections_closed_total", "direction=inbound", "k8s_deployment_name=checkout") == conns
	}, 30*time.Second, 200*time.Millisecond, "scrape never showed the connections with identities")
	// The local end is on the Resource (here turned into labels), the peer
	// on the data point.
	assert.Equal(t, float64(conns), sample(exp, "tcp_connections_opened_total",
		"direction=outbound", "k8s_deployment_name=frontend", "k8s_namespace_name=web", "k8s_pod_name=frontend-7c9d5-abcde",
		"service_name=frontend", "service_version=v1", "peer_workload=checkout", "peer_workload_kind=Deployment", "peer_namespace=shop"))
	assert.Equal(t, float64(conns*request), sample(exp, "tcp_bytes_sent_total",
		"direction=outbound", "k8s_deployment_name=frontend", "peer_workload=checkout"))
	assert.Equal(t, float64(conns), sample(exp, "tcp_service_connections_opened_total",
		"direction=outbound", "k8s_deployment_name=frontend", "destination_service_name=checkout", "destination_service_namespace=shop"))
	assert.Equal(t, float64(conns), sample(exp, "tcp_connection_duration_seconds_count", "direction=inbound", "k8s_deployment_name=checkout"),
		"one duration observation per closed connection")
	assert.Equal(t, float64(conns), sample(exp, "tcp_connections_closed_total", "direction=outbound", "k8s_node_name=node-a"), "node name on the resource")

	col.stop(t)
	logs, _ := readFileExport(t, out+".logs")
	closes := 0
	for _, lr := range logs {
		if lr.EventName() != "tcp.connection.close" {
			continue
		}
		closes++
		a := lr.Attributes().AsRaw()
		assert.Equal(t, "frontend", a["source.workload.name"])
		assert.Equal(t, "Deployment", a["source.workload.kind"])
		assert.Equal(t, "web", a["source.k8s.namespace.name"])
		assert.Equal(t, "frontend-7c9d5-abcde", a["source.k8s.pod.name"])
		assert.Equal(t, "spiffe://example.org/ns/web/sa/frontend", a["source.principal"])
		assert.Equal(t, "checkout", a["destination.workload.name"])
		assert.Equal(t, "shop", a["destination.k8s.namespace.name"])
		assert.Equal(t, "spiffe://example.org/ns/shop/sa/checkout", a["destination.principal"])
		assert.Equal(t, "checkout.shop.svc.cluster.local", a["destination.service.host"])
		assert.Equal(t, "test-cluster", a["destination.cluster"])
		assert.Equal(t, "v2", a["destination.canonical_revision"])
		assert.Contains(t, lr.Body().Str(), "src.workload=frontend src.namespace=web")
		assert.Contains(t, lr.Body().Str(), "dst.service=checkout.shop.svc.cluster.local dst.workload=checkout dst.namespace=shop")
	}
	assert.Equal(t, 2*conns, closes, "one close record per connection per side")
}

func ptr[T any](v T) *T { return &v }

// startShop starts an API server that knows the pair's two ends as pods:
// the client is web/frontend (a Deployment's pod), the server shop/checkout
// behind the checkout service on port. It returns the path of a kubeconfig
// for it, all a collector needs.
func startShop(t *testing.T, pair *netnstest.Pair, port int32) (kubeconfig string) {
	t.Helper()
	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("web", "frontend")
	obj.Namespace("shop", "checkout")
	obj.Node("node-a", "198.51.100.250")
	obj.Pod(kubetest.PodSpec{Namespace: "web", Name: "frontend-7c9d5-abcde", Node: "node-a", ServiceAccount: "frontend",
		IP: pair.ClientIP.String(), Labels: map[string]string{"app": "frontend", "version": "v1"}, Owner: ptr(obj.Deployment("web", "frontend"))})
	checkout := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "checkout-5d8f-xyz12", Node: "node-a", ServiceAccount: "checkout",
		IP: pair.ServerIP.String(), Labels: map[string]string{"app": "checkout", "version": "v2"}, Owner: ptr(obj.Deployment("shop", "checkout"))})
	obj.Service("shop", "checkout", "", 80, port, checkout)
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	return kubeconfig
}
