package tcpconnreceiver

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
)

// The node-port test's own /24 of 10.206.
var nodePortPrefix = [3]byte{10, 206, 20}

// TestKernelNodePortFromAnotherNode: a client on a second node (node-b,
// its own namespace and address, a Node in the API server) connects to
// node-a's address on a Service's node port; node-a translates it as
// kube-proxy's iptables mode does (KUBE-NODEPORTS -> KUBE-EXT, marked for
// masquerading -> KUBE-SVC -> KUBE-SEP DNAT to the backend pod, then
// KUBE-POSTROUTING masquerades it to node-a's address); node-b has the same
// rules, which do not apply to another node's address. Each node runs its
// agent, with conntrack lookups in its own node's namespace.
//
// node-b's agent (the client side) names the Service (the node port is the
// Service's on every node) and node-a's address and port, but not the
// backend: its node translated nothing, and its conntrack says so (one
// lookup per connection, no translation). node-a's agent (the server
// side) names the backend pod and the Service, and as the client node-a
// itself, whose address the connection came from after masquerading. The
// two records of each connection share tcp.connection.uid, which is what
// joins them. Exact bytes on both. (The probe sees every socket on the
// machine: each agent is asserted on its own node's sockets only.)
func TestKernelNodePortFromAnotherNode(t *testing.T) {
	const (
		request, response = 2500, 600
		port              = 8080
		conns             = 3
	)
	nodeA := netnstest.NewRouted(t, nodePortPrefix, 1)
	nodeB := netnstest.NewRouted(t, nodePortPrefix, 0)
	backend := nodeA.PodIPs[0]
	ipA := netip.AddrFrom4([4]byte{nodePortPrefix[0], nodePortPrefix[1], nodePortPrefix[2], 1})
	ipB := netip.AddrFrom4([4]byte{nodePortPrefix[0], nodePortPrefix[1], nodePortPrefix[2], 2})
	netnstest.LinkNodes(t, nodeA, nodeB, ipA, ipB)

	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("shop", "web")
	obj.Node("node-a", ipA.String())
	obj.Node("node-b", ipB.String())
	pod := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "web-5d8f-xyz10", Node: "node-a", ServiceAccount: "web",
		IP: backend.String(), Labels: map[string]string{"app": "web", "version": "v1"}, Owner: ptr(obj.Deployment("shop", "web"))})
	clusterIP := netip.MustParseAddr(obj.Service("shop", "web", "", 80, port, pod))
	svc, err := obj.Client.CoreV1().Services("shop").Get(context.Background(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc, err = obj.Client.CoreV1().Services("shop").Update(context.Background(), svc, metav1.UpdateOptions{})
	require.NoError(t, err)
	nodePort := uint16(svc.Spec.Ports[0].NodePort)
	for _, node := range []*netnstest.Routed{nodeA, nodeB} {
		node.KubeProxyService(t, "NODEPORT", clusterIP, 80, netip.AddrPortFrom(backend, port))
		node.KubeProxyNodePort(t, "NODEPORT", nodePort)
		node.KubeProxyMasquerade(t)
	}
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	t.Setenv("KUBECONFIG", kubeconfig)

	// The backend, noting where each connection came from.
	var mu sync.Mutex
	var from []netip.AddrPort
	l, err := nodeA.Pods[0].Listen(netip.AddrPortFrom(backend, port).String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if netnstest.Answer(c, request, response) == nil {
					mu.Lock()
					from = append(from, c.RemoteAddr().(*net.TCPAddr).AddrPort())
					mu.Unlock()
				}
				_, _ = c.Read(make([]byte, 1)) // the client closes first
			}()
		}
	}()

	include := netip.PrefixFrom(ipA, 24).Masked().String()
	agentA := startNATAgent(t, "node-a", nodeA.NodePath(), include)
	agentB := startNATAgent(t, "node-b", nodeB.NodePath(), include)

	clientPorts := map[uint16]bool{}
	for range conns {
		clientPorts[exchange(t, nodeB.Node, netip.AddrPortFrom(ipA, nodePort), request, response)] = true
	}
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(from) == conns }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the server's closes follow the client's
	trackB := agentB.mr.(*tcpconnReceiver).track
	agentA.stop(t)
	agentB.stop(t)
	for _, f := range from {
		assert.Equal(t, ipA, f.Addr(), "masqueraded: the backend sees node-a's address")
	}

	// node-b: the client side.
	lookups, failed, _ := trackB.NATStats()
	assert.Equal(t, int64(conns), lookups, "node-b asks its conntrack once per connection")
	assert.Zero(t, failed)
	uids := map[string]bool{}
	for _, a := range agentB.closes() {
		if a["source.address"] != ipB.String() || a[accesslog.AttrDirection] != "outbound" {
			continue
		}
		require.True(t, clientPorts[uint16(a["source.port"].(int64))], "a connection the test did not make: %v", a)
		assert.Equal(t, ipA.String(), a["destination.address"], "node-b knows the node it dialled")
		assert.Equal(t, int64(nodePort), a["destination.port"])
		assert.Equal(t, "web.shop.svc.cluster.local", a["destination.service.host"], "and the Service, by its node port")
		assert.NotContains(t, a, "destination.workload.name", "not the backend: node-b translated nothing")
		assert.NotContains(t, a, "destination.k8s.pod.name")
		assert.NotContains(t, a, accesslog.AttrDialledAddress)
		assert.Equal(t, "node-b", a["source.k8s.node.name"])
		assert.Equal(t, int64(request), a[accesslog.AttrBytesSent])
		assert.Equal(t, int64(response), a[accesslog.AttrBytesReceived])
		uids[a[accesslog.AttrConnUID].(string)] = true
	}
	assert.Len(t, uids, conns, "one client-side close per connection, each its own UID")

	// node-a: the server side.
	served := 0
	for _, a := range agentA.closes() {
		if a["destination.address"] != backend.String() || a[accesslog.AttrDirection] != "inbound" {
			continue
		}
		served++
		assert.Equal(t, ipA.String(), a["source.address"], "the client as the backend sees it: node-a, masquerading")
		assert.Equal(t, "node-a", a["source.k8s.node.name"])
		assert.Equal(t, int64(port), a["destination.port"])
		assert.Equal(t, "web", a["destination.workload.name"])
		assert.Equal(t, "web-5d8f-xyz10", a["destination.k8s.pod.name"])
		assert.Equal(t, "spiffe://cluster.local/ns/shop/sa/web", a["destination.principal"])
		assert.Equal(t, "web.shop.svc.cluster.local", a["destination.service.host"])
		assert.Equal(t, int64(request), a[accesslog.AttrBytesReceived])
		assert.Equal(t, int64(response), a[accesslog.AttrBytesSent])
		assert.True(t, uids[a[accesslog.AttrConnUID].(string)], "the server side's UID is a client side's: %v", a[accesslog.AttrConnUID])
	}
	assert.Equal(t, conns, served, "one server-side close per connection")

	// istio: node-b's reporter="source" series has the Service and an
	// unknown workload; node-a's reporter="destination" series the backend,
	// from node-a.
	mdB := agentB.metrics.AllMetrics()[len(agentB.metrics.AllMetrics())-1]
	mdA := agentA.metrics.AllMetrics()[len(agentA.metrics.AllMetrics())-1]
	for _, c := range []struct {
		md   pmetric.Metrics
		want map[string]string
	}{
		{mdB, map[string]string{"reporter": "source", "source_workload": "node-b", "destination_workload": "unknown",
			"destination_service": "web.shop.svc.cluster.local", "destination_principal": "unknown"}},
		{mdA, map[string]string{"reporter": "destination", "source_workload": "node-a", "destination_workload": "web",
			"destination_workload_namespace": "shop", "destination_service": "web.shop.svc.cluster.local",
			"destination_principal": "spiffe://cluster.local/ns/shop/sa/web"}},
	} {
		assert.Equal(t, int64(conns), sumWhereAll(c.md, "istio_tcp_connections_closed", c.want), "%v: %s", c.want, seriesOf(c.md, "istio_tcp_connections_closed"))
		assert.Equal(t, int64(conns*request), sumWhereAll(c.md, "istio_tcp_received_bytes", c.want), "%v", c.want)
		assert.Equal(t, int64(conns*response), sumWhereAll(c.md, "istio_tcp_sent_bytes", c.want), "%v", c.want)
	}
}
