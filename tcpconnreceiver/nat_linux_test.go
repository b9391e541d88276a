package tcpconnreceiver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/pdata/plog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
)

// The NAT tests use 10.206.0.0/16 (this package's other kernel tests use
// 10.202): a /24 per test.
var natPrefix = [3]byte{10, 206, 1}

// backends answers exchanges on each backend pod and records, per client
// port, which backend served it.
type backends struct {
	mu     sync.Mutex
	served map[uint16]int // client port -> backend index
}

func (b *backends) serve(t *testing.T, pod *netnstest.NS, addr netip.AddrPort, index, request, response int) {
	l, err := pod.Listen(addr.String())
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
					b.mu.Lock()
					b.served[uint16(c.RemoteAddr().(*net.TCPAddr).Port)] = index
					b.mu.Unlock()
				}
				_, _ = c.Read(make([]byte, 1)) // the client closes first
			}()
		}
	}()
}

func (b *backends) count() (n [2]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, i := range b.served {
		n[i]++
	}
	return n
}

// TestKernelClusterIPNamesTheBackendReached: a client pod dials a Service's
// ClusterIP (and its node port on the node's IP), which the node translates to one of two backend pods exactly
// as kube-proxy's iptables mode does (KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP,
// statistic mode random; KUBE-NODEPORTS -> KUBE-EXT -> KUBE-SVC). The pods are network namespaces routed by a
// "node" namespace, whose conntrack table the receiver queries
// (nat.netns); the Pods, Service and EndpointSlice are in a real API
// server. The client side must name the backend pod it reached and the
// Service, and reporter=source and reporter=destination series (istio
// profile) must agree on the workloads.
func TestKernelClusterIPNamesTheBackendReached(t *testing.T) {
	// kube-proxy's iptables and nftables modes both translate in the node's
	// conntrack. (Its ipvs mode does too, with net.ipv4.vs.conntrack=1, which
	// kube-proxy sets; this kernel has no IPVS to try it.)
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) { testClusterIPNamesTheBackendReached(t, mode) })
	}
}

func testClusterIPNamesTheBackendReached(t *testing.T, mode string) {
	const (
		request  = 3000
		response = 700
		port     = 8080
	)
	routed := netnstest.NewRouted(t, natPrefix, 3)
	client, podIPs := routed.PodIPs[0], routed.PodIPs[1:]
	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("web", "frontend")
	obj.Namespace("shop", "web")
	nodeIP := netip.AddrFrom4([4]byte{natPrefix[0], natPrefix[1], natPrefix[2], 1})
	routed.NodeAddress(t, nodeIP)
	obj.Node("node-a", nodeIP.String())
	obj.Pod(kubetest.PodSpec{Namespace: "web", Name: "frontend-7c9d5-abcde", Node: "node-a", ServiceAccount: "frontend",
		IP: client.String(), Labels: map[string]string{"app": "frontend", "version": "v1"}, Owner: ptr(obj.Deployment("web", "frontend"))})
	var pods []*corev1.Pod
	for i, version := range []string{"v1", "v2"} {
		name := "web-" + version
		pods = append(pods, obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: name + "-5d8f-xyz1" + fmt.Sprint(i), Node: "node-a", ServiceAccount: "web",
			IP: podIPs[i].String(), Labels: map[string]string{"app": "web", "version": version}, Owner: ptr(obj.Deployment("shop", name))}))
	}
	clusterIP := netip.MustParseAddr(obj.Service("shop", "web", "", 80, port, pods...))
	// A NodePort service, as well: the API server allocates the node port.
	svc, err := obj.Client.CoreV1().Services("shop").Get(context.Background(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc, err = obj.Client.CoreV1().Services("shop").Update(context.Background(), svc, metav1.UpdateOptions{})
	require.NoError(t, err)
	nodePort := netip.AddrPortFrom(nodeIP, uint16(svc.Spec.Ports[0].NodePort))
	var targets []netip.AddrPort
	for _, ip := range podIPs {
		targets = append(targets, netip.AddrPortFrom(ip, port))
	}
	if mode == "nftables" {
		routed.KubeProxyNFT(t, "WEBSHOP", clusterIP, 80, nodePort.Port(), targets...)
	} else {
		routed.KubeProxyService(t, "WEBSHOP", clusterIP, 80, targets...)
		routed.KubeProxyNodePort(t, "WEBSHOP", nodePort.Port())
	}
	dials := []netip.AddrPort{netip.AddrPortFrom(clusterIP, 80), nodePort}
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	t.Setenv("KUBECONFIG", kubeconfig)

	served := &backends{served: map[uint16]int{}}
	for i, target := range targets {
		served.serve(t, routed.Pods[i+1], target, i, request, response)
	}

	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.Profile = ProfileIstio
	cfg.Filter.IncludeCIDRs = []string{netip.PrefixFrom(client, 24).Masked().String()}
	cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType, cfg.Kubernetes.NodeName = true, kube.AuthKubeConfig, "node-a"
	cfg.NAT.NetNS = routed.NodePath()
	mr, lr, metrics, logs, host := startBoth(t, cfg)
	require.NotNil(t, mr.(*tcpconnReceiver).nat, "conntrack lookups are on")
	require.Eventually(t, func() bool {
		e := host.last()
		return e != nil && e.Status() == componentstatus.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "resolver never synchronised")
	time.Sleep(300 * time.Millisecond) // the first index build follows the sync

	// Connect, to the ClusterIP and to the node port in turn, until both
	// backends have served (picked at random, as kube-proxy does).
	conns := 0
	dialled := map[uint16]netip.AddrPort{} // by client port
	for n := served.count(); conns < 6 || n[0] == 0 || n[1] == 0; n = served.count() {
		require.Less(t, conns, 60, "kube-proxy's rules never picked both backends")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		target := dials[conns%len(dials)]
		c, err := routed.Pods[0].Dial(ctx, target.String())
		cancel()
		require.NoError(t, err)
		dialled[uint16(c.LocalAddr().(*net.TCPAddr).Port)] = target
		require.NoError(t, netnstest.Ask(c, request, response))
		require.NoError(t, c.Close())
		conns++
	}
	require.Eventually(t, func() bool { n := served.count(); return n[0]+n[1] == conns }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the servers' closes follow the client's
	require.NoError(t, mr.Shutdown(context.Background()))
	require.NoError(t, lr.Shutdown(context.Background()))

	n := served.count()
	served.mu.Lock()
	defer served.mu.Unlock()
	workloads := []string{"web-v1", "web-v2"}
	clientCloses, serverCloses := 0, 0
	dialledKinds := map[netip.AddrPort]int{}
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		if lr.EventName() != "tcp.connection.close" {
			return
		}
		a := lr.Attributes().AsRaw()
		if a["source.address"] != client.String() {
			return
		}
		backend, ok := served.served[uint16(a["source.port"].(int64))]
		require.True(t, ok, "a connection no backend served: %v", a)
		assert.Equal(t, podIPs[backend].String(), a["destination.address"], "the backend reached")
		assert.Equal(t, int64(port), a["destination.port"])
		assert.Equal(t, workloads[backend], a["destination.workload.name"])
		assert.Equal(t, "shop", a["destination.k8s.namespace.name"])
		assert.Equal(t, "spiffe://cluster.local/ns/shop/sa/web", a["destination.principal"])
		assert.Equal(t, "web.shop.svc.cluster.local", a["destination.service.host"])
		assert.Equal(t, "frontend", a["source.workload.name"])
		switch a[accesslog.AttrDirection] {
		case "outbound":
			clientCloses++
			target := dialled[uint16(a["source.port"].(int64))]
			assert.Equal(t, target.Addr().String(), a[accesslog.AttrDialledAddress], "the address dialled is kept")
			assert.Equal(t, int64(target.Port()), a[accesslog.AttrDialledPort])
			assert.Equal(t, int64(request), a[accesslog.AttrBytesSent])
			assert.Equal(t, int64(response), a[accesslog.AttrBytesReceived])
			assert.Contains(t, lr.Body().Str(), fmt.Sprintf("dst.addr=%s:%d dst.dialled=%s dst.service=web.shop.svc.cluster.local dst.workload=%s dst.namespace=shop",
				podIPs[backend], port, target, workloads[backend]))
			dialledKinds[target]++
		case "inbound":
			serverCloses++
			assert.NotContains(t, a, accesslog.AttrDialledAddress, "the server side saw no translation")
		}
	})
	assert.Equal(t, conns, clientCloses, "one client-side close per connection")
	assert.Len(t, dialledKinds, 2, "through the ClusterIP and the node port: %v", dialledKinds)
	assert.Equal(t, conns, serverCloses, "one server-side close per connection")

	md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
	for i, w := range workloads {
		for _, reporter := range []string{"source", "destination"} {
			want := map[string]string{"reporter": reporter, "source_workload": "frontend", "source_workload_namespace": "web",
				"destination_workload": w, "destination_workload_namespace": "shop", "destination_service": "web.shop.svc.cluster.local",
				"destination_principal": "spiffe://cluster.local/ns/shop/sa/web", "destination_version": "v" + fmt.Sprint(i+1)}
			assert.Equal(t, int64(n[i]), sumWhereAll(md, "istio_tcp_connections_opened", want), "%s reporter, %s", reporter, w)
			assert.Equal(t, int64(n[i]), sumWhereAll(md, "istio_tcp_connections_closed", want), "%s reporter, %s", reporter, w)
			assert.Equal(t, int64(n[i]*request), sumWhereAll(md, "istio_tcp_received_bytes", want), "%s reporter, %s", reporter, w)
			assert.Equal(t, int64(n[i]*response), sumWhereAll(md, "istio_tcp_sent_bytes", want), "%s reporter, %s", reporter, w)
		}
	}
	assert.Zero(t, sumWhereAll(md, "istio_tcp_connections_opened", map[string]string{"source_workload": "frontend", "destination_workload": "unknown"}),
		"no client-side series to an unknown workload")
}
