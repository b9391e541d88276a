package kube

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/internal/kubetest"
)

// health records the resolver's OnHealth calls.
type health struct {
	mu   sync.Mutex
	last error
	n    int
}

func (h *health) set(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last, h.n = err, h.n+1
}

func (h *health) get() (error, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last, h.n
}

// TestResolverAgainstAPIServer runs the resolver on a real kube-apiserver
// and etcd and checks every identity field, IP reuse, host-network pods,
// pods in several services, headless services and an API server restart.
func TestResolverAgainstAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	client := srv.Client(t)
	obj := kubetest.Objects{TB: t, Client: client}
	obj.Namespace("shop", "checkout-sa", "worker-sa")
	obj.Node("node-a", "198.51.100.200")

	cfg := DefaultConfig()
	cfg.Enabled, cfg.TrustDomain, cfg.ClusterName = true, "example.org", "prod-eu"
	h := &health{}
	r := New(client, cfg, Options{Debounce: 5 * time.Millisecond, HealthInterval: 100 * time.Millisecond, OnHealth: h.set})
	r.Start()
	defer r.Stop()

	checkout := obj.Pod(kubetest.PodSpec{
		Namespace: "shop", Name: "checkout-5d8f7c9b4-x2x9q", Node: "node-a", ServiceAccount: "checkout-sa", IP: "198.51.100.10",
		Labels: map[string]string{"app.kubernetes.io/name": "checkout", "app.kubernetes.io/version": "v2", "service.istio.io/canonical-name": "checkout-svc"},
		Owner:  ptr(obj.Deployment("shop", "checkout")),
	})
	batch := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "report-29000000-abcde", Node: "node-a", ServiceAccount: "worker-sa", IP: "198.51.100.11",
		Labels: map[string]string{"app": "report", "version": "7"}, Owner: ptr(obj.CronJob("shop", "report"))})
	sts := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "db-0", Node: "node-a", IP: "198.51.100.12",
		Owner: ptr(ownerRef("apps/v1", "StatefulSet", "db"))})
	ds := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "agent-7xk2p", Node: "node-a", IP: "198.51.100.13",
		Owner: ptr(ownerRef("apps/v1", "DaemonSet", "agent"))})
	bare := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "debug", Node: "node-a", IP: "198.51.100.14"})
	host := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "exporter-node-a", Node: "node-a", IP: "198.51.100.200", HostNetwork: true, Ports: []int32{9100},
		Owner: ptr(ownerRef("apps/v1", "DaemonSet", "node-exporter"))})

	clusterIP := obj.Service("shop", "checkout", "", 80, 8080, checkout)
	obj.Service("shop", "payments", "", 81, 8080, checkout) // a second service on the same pod port
	obj.Service("shop", "checkout-admin", "", 90, 9090, checkout)
	obj.Service("shop", "db", "None", 5432, 5432, sts) // headless
	_ = []any{batch, ds, bare, host}

	resolve := func(ip string, port uint16, role identity.Role) *identity.Identity {
		return r.Resolve(netip.MustParseAddr(ip), port, time.Now(), role)
	}
	require.Eventually(t, func() bool {
		id := resolve("198.51.100.12", 5432, identity.RoleServer)
		return id != nil && id.Service != "" && resolve("198.51.100.200", 9100, identity.RoleServer) != nil
	}, 30*time.Second, 20*time.Millisecond, "resolver never indexed the objects")

	t.Run("deployment pod as client", func(t *testing.T) {
		id := resolve("198.51.100.10", 41000, identity.RoleClient)
		require.NotNil(t, id)
		assert.Equal(t, identity.Identity{
			Pod: "checkout-5d8f7c9b4-x2x9q", PodUID: string(checkout.UID), PodIP: "198.51.100.10", Namespace: "shop", Node: "node-a",
			Workload: "checkout", WorkloadKind: "Deployment",
			ServiceAccount: "checkout-sa", Principal: "spiffe://example.org/ns/shop/sa/checkout-sa",
			App: "checkout", Version: "v2", CanonicalService: "checkout-svc", CanonicalRevision: "v2", Cluster: "prod-eu",
		}, *id)
	})
	t.Run("pod in two services on one port gets the first by name", func(t *testing.T) {
		id := resolve("198.51.100.10", 8080, identity.RoleServer)
		require.NotNil(t, id)
		assert.Equal(t, "checkout.shop.svc.cluster.local", id.Service)
		assert.Equal(t, "checkout", id.ServiceName)
		assert.Equal(t, "shop", id.ServiceNamespace)
		assert.Equal(t, "checkout", id.Workload)
	})
	t.Run("each service port maps to its own service", func(t *testing.T) {
		id := resolve("198.51.100.10", 9090, identity.RoleServer)
		require.NotNil(t, id)
		assert.Equal(t, "checkout-admin.shop.svc.cluster.local", id.Service)
	})
	t.Run("cluster IP resolves to the service", func(t *testing.T) {
		id := resolve(clusterIP, 80, identity.RoleServer)
		require.NotNil(t, id)
		assert.Equal(t, "checkout.shop.svc.cluster.local", id.Service)
		assert.Empty(t, id.Pod)
		assert.Nil(t, resolve(clusterIP, 80, identity.RoleClient), "a client end is never a service")
	})
	t.Run("cronjob pod", func(t *testing.T) {
		id := resolve("198.51.100.11", 40000, identity.RoleClient)
		require.NotNil(t, id)
		assert.Equal(t, "report", id.Workload)
		assert.Equal(t, "CronJob", id.WorkloadKind)
		assert.Equal(t, "report", id.App)
		assert.Equal(t, "7", id.Version)
		assert.Equal(t, "report", id.CanonicalService)
		assert.Equal(t, "7", id.CanonicalRevision)
		assert.Equal(t, "spiffe://example.org/ns/shop/sa/worker-sa", id.Principal)
	})
	t.Run("statefulset pod behind a headless service", func(t *testing.T) {
		id := resolve("198.51.100.12", 5432, identity.RoleServer)
		require.NotNil(t, id)
		assert.Equal(t, "db", id.Workload)
		assert.Equal(t, "StatefulSet", id.WorkloadKind)
		assert.Equal(t, "db.shop.svc.cluster.local", id.Service)
		assert.Equal(t, "default", id.ServiceAccount)
		assert.Equal(t, "db", id.CanonicalService, "no labels: the workload name")
		assert.Equal(t, "latest", id.CanonicalRevision)
	})
	t.Run("daemonset and bare pods", func(t *testing.T) {
		id := resolve("198.51.100.13", 1, identity.RoleClient)
		require.NotNil(t, id)
		assert.Equal(t, "agent", id.Workload)
		assert.Equal(t, "DaemonSet", id.WorkloadKind)
		id = resolve("198.51.100.14", 1, identity.RoleClient)
		require.NotNil(t, id)
		assert.Equal(t, "debug", id.Workload)
		assert.Equal(t, "Pod", id.WorkloadKind)
	})
	t.Run("host network pod by port, else the node", func(t *testing.T) {
		id := resolve("198.51.100.200", 9100, identity.RoleServer)
		require.NotNil(t, id)
		assert.Equal(t, "exporter-node-a", id.Pod)
		assert.Equal(t, "node-exporter", id.Workload)
		assert.True(t, id.HostNetwork)
		id = resolve("198.51.100.200", 45000, identity.RoleClient)
		require.NotNil(t, id)
		assert.Equal(t, "node-a", id.Node)
		assert.Equal(t, "Node", id.WorkloadKind)
		assert.Empty(t, id.Pod)
	})
	t.Run("unknown address", func(t *testing.T) {
		assert.Nil(t, resolve("198.51.100.99", 80, identity.RoleServer))
	})

	t.Run("deleted pod keeps its connections, its IP's next pod gets new ones", func(t *testing.T) {
		before := time.Now()
		time.Sleep(1100 * time.Millisecond) // creationTimestamp has one-second precision
		obj.DeletePod("shop", "debug")
		require.Eventually(t, func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return len(r.tombstones) == 1
		}, 10*time.Second, 10*time.Millisecond)
		reused := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "debug-2", Node: "node-a", IP: "198.51.100.14"})
		require.Eventually(t, func() bool {
			id := resolve("198.51.100.14", 1, identity.RoleClient)
			return id != nil && id.Pod == "debug-2"
		}, 10*time.Second, 10*time.Millisecond)
		old := r.Resolve(netip.MustParseAddr("198.51.100.14"), 1, before, identity.RoleClient)
		require.NotNil(t, old)
		assert.Equal(t, "debug", old.Pod, "a connection that started before the delete keeps the old pod")
		assert.Equal(t, string(bare.UID), old.PodUID)
		assert.Equal(t, string(reused.UID), resolve("198.51.100.14", 1, identity.RoleClient).PodUID)
	})

	t.Run("API server stopped and restarted", func(t *testing.T) {
		require.Eventually(t, func() bool { err, n := h.get(); return n > 0 && err == nil }, 10*time.Second, 10*time.Millisecond, "never healthy")
		srv.StopAPIServer()
		require.Eventually(t, func() bool { err, _ := h.get(); return err != nil }, 20*time.Second, 20*time.Millisecond, "outage not reported")
		// Lookups keep answering from what is known.
		assert.NotNil(t, resolve("198.51.100.10", 41000, identity.RoleClient))
		require.NoError(t, srv.StartAPIServer())
		require.Eventually(t, func() bool { err, _ := h.get(); return err == nil }, 30*time.Second, 20*time.Millisecond, "recovery not reported")
		obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "after-restart", Node: "node-a", IP: "198.51.100.15"})
		require.Eventually(t, func() bool {
			id := resolve("198.51.100.15", 1, identity.RoleClient)
			return id != nil && id.Pod == "after-restart"
		}, 60*time.Second, 20*time.Millisecond, "changes after the restart never arrived")
	})
}

// TestFinishedPodReleasesIP: a Job's pod that finished keeps its IP in the
// API while the network plugin gives the IP to a new pod. Connections that
// started before it finished keep it; later ones get the new pod, and
// between the two nobody holds the IP.
func TestFinishedPodReleasesIP(t *testing.T) {
	srv := kubetest.Start(t)
	client := srv.Client(t)
	obj := kubetest.Objects{TB: t, Client: client}
	obj.Namespace("batch")
	obj.Node("node-a", "198.51.100.201")

	cfg := DefaultConfig()
	cfg.Enabled = true
	r := New(client, cfg, Options{Debounce: 5 * time.Millisecond})
	r.Start()
	defer r.Stop()
	ip := netip.MustParseAddr("198.51.100.30")
	resolve := func(at time.Time) *identity.Identity { return r.Resolve(ip, 40000, at, identity.RoleClient) }

	for _, phase := range []corev1.PodPhase{corev1.PodSucceeded, corev1.PodFailed} {
		t.Run(string(phase), func(t *testing.T) {
			name := "export-" + strings.ToLower(string(phase))
			old := obj.Pod(kubetest.PodSpec{Namespace: "batch", Name: name, Node: "node-a", IP: ip.String(), Owner: ptr(obj.Job("batch", name))})
			require.Eventually(t, func() bool { id := resolve(time.Now()); return id != nil && id.Pod == name }, 10*time.Second, 10*time.Millisecond)
			assert.Equal(t, "Job", resolve(time.Now()).WorkloadKind)

			time.Sleep(1100 * time.Millisecond) // the API's times have one-second precision
			before := time.Now()                // a connection of the Job's pod, open while it ran
			finish := before.Add(time.Second)
			obj.FinishPod("batch", name, phase, finish)
			require.Eventually(t, func() bool { return resolve(finish.Add(2*time.Second)) == nil }, 10*time.Second, 10*time.Millisecond,
				"a finished pod still holds its IP after it finished")

			time.Sleep(time.Until(finish.Add(2100 * time.Millisecond)))
			next := obj.Pod(kubetest.PodSpec{Namespace: "batch", Name: name + "-next", Node: "node-a", IP: ip.String()})
			require.Eventually(t, func() bool { id := resolve(time.Now()); return id != nil && id.Pod == next.Name }, 10*time.Second, 10*time.Millisecond,
				"a connection started after the finish does not get the IP's new pod")
			assert.Equal(t, string(next.UID), resolve(time.Now()).PodUID)
			id := resolve(before)
			require.NotNil(t, id, "a connection started before the finish lost its pod")
			assert.Equal(t, string(old.UID), id.PodUID, "a connection started before the finish keeps the finished pod")

			// Deleted later, the finished pod keeps the time it finished.
			obj.DeletePod("batch", name)
			require.Eventually(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.tombstones[string(old.UID)] != nil }, 10*time.Second, 10*time.Millisecond)
			time.Sleep(50 * time.Millisecond)
			assert.Equal(t, string(old.UID), resolve(before).PodUID)
			assert.Equal(t, string(next.UID), resolve(time.Now()).PodUID)
			obj.DeletePod("batch", next.Name)
		})
	}
}

// TestZonesAgainstAPIServer: each end's zone is its node's
// topology.kubernetes.io/zone label: pods, host-network ends and nodes;
// empty where the node has none; a relabelled node moves its pods.
func TestZonesAgainstAPIServer(t *testing.T) {
	srv := kubetest.Start(t)
	client := srv.Client(t)
	obj := kubetest.Objects{TB: t, Client: client}
	obj.Namespace("shop")
	obj.ZonedNode("node-a", "198.51.100.210", "zone-a")
	obj.ZonedNode("node-b", "198.51.100.211", "zone-b")
	obj.Node("node-c", "198.51.100.212")
	r := New(client, DefaultConfig(), Options{Debounce: 5 * time.Millisecond})
	r.Start()
	defer r.Stop()
	obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "a", Node: "node-a", IP: "198.51.100.40"})
	obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "b", Node: "node-b", IP: "198.51.100.41"})
	obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "c", Node: "node-c", IP: "198.51.100.42"})
	zone := func(ip string) string {
		id := r.Resolve(netip.MustParseAddr(ip), 40000, time.Now(), identity.RoleClient)
		if id == nil {
			return "<nil>"
		}
		return id.Node + "/" + id.Zone
	}
	require.Eventually(t, func() bool { return zone("198.51.100.42") == "node-c/" }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, "node-a/zone-a", zone("198.51.100.40"))
	assert.Equal(t, "node-b/zone-b", zone("198.51.100.41"))
	assert.Equal(t, "node-b/zone-b", zone("198.51.100.211"), "the node itself")

	n, err := client.CoreV1().Nodes().Get(t.Context(), "node-c", metav1.GetOptions{})
	require.NoError(t, err)
	n.Labels = map[string]string{corev1.LabelTopologyZone: "zone-c", "other": "dropped"}
	_, err = client.CoreV1().Nodes().Update(t.Context(), n, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return zone("198.51.100.42") == "node-c/zone-c" }, 10*time.Second, 10*time.Millisecond)
	node, err := r.nodes.Get("node-c")
	require.NoError(t, err)
	assert.Equal(t, map[string]string{corev1.LabelTopologyZone: "zone-c"}, node.Labels, "the informer keeps only the zone label")
}

// TestResolvePodByUID: the local end found by its network namespace is
// named by its pod's UID: the pod (as a server, with the service of its
// port), also once deleted within the grace period, whoever holds its IP
// now; nodes by name.
func TestResolvePodByUID(t *testing.T) {
	srv := kubetest.Start(t)
	client := srv.Client(t)
	obj := kubetest.Objects{TB: t, Client: client}
	obj.Namespace("shop")
	obj.ZonedNode("node-a", "198.51.100.220", "zone-a")
	r := New(client, DefaultConfig(), Options{Debounce: 5 * time.Millisecond})
	r.Start()
	defer r.Stop()
	web := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "web-1", Node: "node-a", IP: "198.51.100.50"})
	obj.Service("shop", "web", "", 80, 8080, web)
	require.Eventually(t, func() bool {
		id := r.ResolvePod(string(web.UID), 8080, identity.RoleServer)
		return id != nil && id.Service != ""
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, "web.shop.svc.cluster.local", r.ResolvePod(string(web.UID), 8080, identity.RoleServer).Service)
	id := r.ResolvePod(string(web.UID), 41000, identity.RoleClient)
	require.NotNil(t, id)
	assert.Equal(t, "web-1", id.Pod)
	assert.Empty(t, id.Service)
	assert.Nil(t, r.ResolvePod("00000000-0000-0000-0000-000000000000", 1, identity.RoleClient))
	// A pod the API server has no address of yet: named by its UID.
	early := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "early-1", Node: "node-a"})
	require.Eventually(t, func() bool {
		id := r.ResolvePod(string(early.UID), 41000, identity.RoleClient)
		return id != nil && id.Pod == "early-1"
	}, 10*time.Second, 10*time.Millisecond, "a pod without an address, by its UID")
	node := r.ResolveNode("node-a")
	require.NotNil(t, node)
	assert.Equal(t, "Node", node.WorkloadKind)
	assert.Equal(t, "zone-a", node.Zone)
	assert.Nil(t, r.ResolveNode("node-z"))

	obj.DeletePod("shop", "web-1")
	obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "web-2", Node: "node-a", IP: "198.51.100.50"})
	require.Eventually(t, func() bool {
		id := r.Resolve(netip.MustParseAddr("198.51.100.50"), 1, time.Now(), identity.RoleClient)
		return id != nil && id.Pod == "web-2"
	}, 10*time.Second, 10*time.Millisecond)
	id = r.ResolvePod(string(web.UID), 41000, identity.RoleClient)
	require.NotNil(t, id, "a deleted pod within the grace period")
	assert.Equal(t, "web-1", id.Pod)
}
