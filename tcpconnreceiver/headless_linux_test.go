package tcpconnreceiver

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	corev1 "k8s.io/api/core/v1"

	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// The headless-Service test's own /24 of 10.206.
var headlessPrefix = [3]byte{10, 206, 21}

// natAgent is a receiver (metrics and logs) as the agent of one node runs
// it: Kubernetes identity through the test's API server (KUBECONFIG), the
// istio profile, conntrack lookups in the node's namespace natNS.
type natAgent struct {
	mr, lr  receiver.Metrics
	metrics *consumertest.MetricsSink
	logs    *consumertest.LogsSink
}

func startNATAgent(t *testing.T, node, natNS string, include ...string) *natAgent {
	t.Helper()
	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.Profile = ProfileIstio
	cfg.Filter.IncludeCIDRs = include
	cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType, cfg.Kubernetes.NodeName = true, kube.AuthKubeConfig, node
	cfg.NAT.NetNS = natNS
	set := receivertest.NewNopSettings(metadata.Type)
	a := &natAgent{metrics: new(consumertest.MetricsSink), logs: new(consumertest.LogsSink)}
	f := NewFactory()
	var err error
	a.mr, err = f.CreateMetrics(context.Background(), set, cfg, a.metrics)
	require.NoError(t, err)
	a.lr, err = f.CreateLogs(context.Background(), set, cfg, a.logs)
	require.NoError(t, err)
	host := &statusHost{}
	require.NoError(t, a.mr.Start(context.Background(), host))
	require.NoError(t, a.lr.Start(context.Background(), host))
	t.Cleanup(func() { a.stop(t) })
	require.NotNil(t, a.mr.(*tcpconnReceiver).nat, "conntrack lookups are on")
	require.Eventually(t, func() bool {
		e := host.last()
		return e != nil && e.Status() == componentstatus.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "resolver never synchronised")
	time.Sleep(300 * time.Millisecond) // the first index build follows the sync
	return a
}

// stop shuts the receiver down (once); its sinks then hold everything.
func (a *natAgent) stop(t *testing.T) {
	if a.mr == nil {
		return
	}
	require.NoError(t, a.mr.Shutdown(context.Background()))
	require.NoError(t, a.lr.Shutdown(context.Background()))
	a.mr, a.lr = nil, nil
}

// closes are the tcp.connection.close records' attributes.
func (a *natAgent) closes() []map[string]any {
	var out []map[string]any
	forEachLog(a.logs.AllLogs(), func(lr plog.LogRecord) {
		if lr.EventName() == "tcp.connection.close" {
			out = append(out, lr.Attributes().AsRaw())
		}
	})
	return out
}

// exchange dials target from ns, sends request bytes, reads response bytes
// and closes; it returns the client's port.
func exchange(t *testing.T, ns *netnstest.NS, target netip.AddrPort, request, response int) uint16 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, target.String())
	require.NoError(t, err)
	require.NoError(t, netnstest.Ask(c, request, response))
	require.NoError(t, c.Close())
	return uint16(c.LocalAddr().(*net.TCPAddr).Port)
}

// TestKernelHeadlessServiceNoLookup: a client pod dials a backend of a
// headless Service (clusterIP: None) by its pod IP, as DNS hands it out:
// the node translates nothing, the record names the backend pod and, from
// the EndpointSlice, the headless Service, and the receiver asks conntrack
// nothing about it. One connection to a ClusterIP in the same run is the
// control: exactly one lookup is made, for it.
func TestKernelHeadlessServiceNoLookup(t *testing.T) {
	const (
		request, response = 2100, 900
		dbPort, webPort   = 5432, 8080
		headlessConns     = 3
	)
	routed := netnstest.NewRouted(t, headlessPrefix, 3)
	client, db, web := routed.PodIPs[0], routed.PodIPs[1], routed.PodIPs[2]
	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("web", "frontend")
	obj.Namespace("shop", "db", "web")
	nodeIP := netip.AddrFrom4([4]byte{headlessPrefix[0], headlessPrefix[1], headlessPrefix[2], 1})
	routed.NodeAddress(t, nodeIP)
	obj.Node("node-a", nodeIP.String())
	obj.Pod(kubetest.PodSpec{Namespace: "web", Name: "frontend-7c9d5-abcde", Node: "node-a", ServiceAccount: "frontend",
		IP: client.String(), Labels: map[string]string{"app": "frontend"}, Owner: ptr(obj.Deployment("web", "frontend"))})
	dbPod := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "db-0", Node: "node-a", ServiceAccount: "db",
		IP: db.String(), Labels: map[string]string{"app": "db", "version": "v14"}})
	webPod := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "web-5d8f-xyz10", Node: "node-a", ServiceAccount: "web",
		IP: web.String(), Labels: map[string]string{"app": "web"}, Owner: ptr(obj.Deployment("shop", "web"))})
	require.Equal(t, corev1.ClusterIPNone, obj.Service("shop", "db", corev1.ClusterIPNone, dbPort, dbPort, dbPod), "headless")
	clusterIP := netip.MustParseAddr(obj.Service("shop", "web", "", 80, webPort, webPod))
	routed.KubeProxyService(t, "HEADLESS", clusterIP, 80, netip.AddrPortFrom(web, webPort))
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	t.Setenv("KUBECONFIG", kubeconfig)

	served := &backends{served: map[uint16]int{}}
	served.serve(t, routed.Pods[1], netip.AddrPortFrom(db, dbPort), 0, request, response)
	served.serve(t, routed.Pods[2], netip.AddrPortFrom(web, webPort), 1, request, response)
	agent := startNATAgent(t, "node-a", routed.NodePath(), netip.PrefixFrom(client, 24).Masked().String())

	headless := map[uint16]bool{}
	for range headlessConns {
		headless[exchange(t, routed.Pods[0], netip.AddrPortFrom(db, dbPort), request, response)] = true
	}
	viaClusterIP := exchange(t, routed.Pods[0], netip.AddrPortFrom(clusterIP, 80), request, response)
	require.Eventually(t, func() bool { n := served.count(); return n[0] == headlessConns && n[1] == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the servers' closes follow the client's
	track := agent.mr.(*tcpconnReceiver).track
	agent.stop(t)

	lookups, failed, _ := track.NATStats()
	assert.Equal(t, int64(1), lookups, "one conntrack lookup: the ClusterIP connection's, none for the headless Service's")
	assert.Zero(t, failed)

	outbound, inbound := 0, 0
	for _, a := range agent.closes() {
		if a["source.address"] != client.String() {
			continue
		}
		port := uint16(a["source.port"].(int64))
		if port == viaClusterIP {
			if a[accesslog.AttrDirection] == "outbound" {
				assert.Equal(t, clusterIP.String(), a[accesslog.AttrDialledAddress], "the control: translated")
				assert.Equal(t, web.String(), a["destination.address"])
				assert.Equal(t, "web", a["destination.workload.name"])
			}
			continue
		}
		require.True(t, headless[port], "a connection the test did not make: %v", a)
		assert.Equal(t, db.String(), a["destination.address"], "the pod dialled")
		assert.Equal(t, int64(dbPort), a["destination.port"])
		assert.Equal(t, "db-0", a["destination.k8s.pod.name"])
		assert.Equal(t, "db-0", a["destination.workload.name"], "a bare pod is its own workload")
		assert.Equal(t, "shop", a["destination.k8s.namespace.name"])
		assert.Equal(t, "spiffe://cluster.local/ns/shop/sa/db", a["destination.principal"])
		assert.Equal(t, "db.shop.svc.cluster.local", a["destination.service.host"], "the headless Service, from its EndpointSlice")
		assert.Equal(t, "db", a["destination.service.name"])
		assert.Equal(t, "frontend", a["source.workload.name"])
		assert.NotContains(t, a, accesslog.AttrDialledAddress, "nothing was translated")
		switch a[accesslog.AttrDirection] {
		case "outbound":
			outbound++
			assert.Equal(t, int64(request), a[accesslog.AttrBytesSent])
			assert.Equal(t, int64(response), a[accesslog.AttrBytesReceived])
		case "inbound":
			inbound++
			assert.Equal(t, int64(response), a[accesslog.AttrBytesSent])
			assert.Equal(t, int64(request), a[accesslog.AttrBytesReceived])
		}
	}
	assert.Equal(t, headlessConns, outbound, "one client-side close per headless connection")
	assert.Equal(t, headlessConns, inbound, "one server-side close per headless connection")

	md := agent.metrics.AllMetrics()[len(agent.metrics.AllMetrics())-1]
	for _, reporter := range []string{"source", "destination"} {
		want := map[string]string{"reporter": reporter, "source_workload": "frontend", "source_workload_namespace": "web",
			"destination_workload": "db-0", "destination_workload_namespace": "shop", "destination_service": "db.shop.svc.cluster.local",
			"destination_principal": "spiffe://cluster.local/ns/shop/sa/db", "destination_version": "v14"}
		assert.Equal(t, int64(headlessConns), sumWhereAll(md, "istio_tcp_connections_closed", want), "%s reporter", reporter)
		assert.Equal(t, int64(headlessConns*request), sumWhereAll(md, "istio_tcp_received_bytes", want), "%s reporter", reporter)
		assert.Equal(t, int64(headlessConns*response), sumWhereAll(md, "istio_tcp_sent_bytes", want), "%s reporter", reporter)
	}
}
