package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcpconn/tcpconn/internal/kubenode"
)

const (
	request  = 1000
	response = 5000
)

// TestAgentOnNode installs deploy/ as shipped on a real node (kubelet,
// containerd, kube-proxy in iptables mode) and checks what the agent
// exports for real pods: both ends named through a ClusterIP, a NodePort
// and a headless Service, the node and kubelet's probes, a Job whose IP
// goes to a new pod, a rollout of the agent under open connections, and
// the API server away when the agent starts.
func TestAgentOnNode(t *testing.T) {
	c := startCluster(t, "iptables", ".")
	agent := c.agent()
	t.Run("ClusterIP", func(t *testing.T) { c.t = t; testClusterIP(c, agent) })
	t.Run("NodeAndProbes", func(t *testing.T) { c.t = t; testNode(c, agent) })
	t.Run("NodePortAndHeadless", func(t *testing.T) { c.t = t; testNodePortHeadless(c, agent) })
	t.Run("JobIPReuse", func(t *testing.T) { c.t = t; testJobIPReuse(c, agent) })
	t.Run("CountersOnlyGrow", func(t *testing.T) { c.t = t; testMonotonic(c, agent) })
	t.Run("Rollout", func(t *testing.T) { c.t = t; testRollout(c) })
	t.Run("APIServerAway", func(t *testing.T) { c.t = t; testAPIAway(c) })
}

// TestAgentOnNodeIstio runs the istio overlay on a node whose kube-proxy
// is in nftables mode: a client through a ClusterIP to two replicas, and
// the two reporters' series agree on both workloads and the bytes.
func TestAgentOnNodeIstio(t *testing.T) {
	c := startCluster(t, "nftables", "overlays/istio")
	agent := c.agent()
	const conns = 12
	c.namespace("shop")
	svc, _ := c.server("shop", "web", 2, "", request, response, true)
	client := c.clientDeployment(clientSpec{ns: "shop", name: "client", target: svc.Spec.ClusterIP + ":80", conns: conns, request: request, response: response})
	c.waitLog("shop", client.Name, "done")
	pair := map[string]string{"source_workload": "client", "source_workload_namespace": "shop", "destination_workload": "web",
		"destination_workload_namespace": "shop", "destination_service_name": "web"}
	e := c.eventually(agent, "both reporters' closes", func(e exposition) bool {
		return e.sum("istio_tcp_connections_closed_total", with(pair, "reporter", "source")) >= conns &&
			e.sum("istio_tcp_connections_closed_total", with(pair, "reporter", "destination")) >= conns
	})
	for _, reporter := range []string{"source", "destination"} {
		m := with(pair, "reporter", reporter)
		assert.Equal(t, float64(conns), e.sum("istio_tcp_connections_opened_total", m), reporter)
		assert.Equal(t, float64(conns), e.sum("istio_tcp_connections_closed_total", m), reporter)
		// As ztunnel: sent_bytes is what the server sent, on both reporters.
		assert.Equal(t, float64(conns*response), e.sum("istio_tcp_sent_bytes_total", m), reporter)
		assert.Equal(t, float64(conns*request), e.sum("istio_tcp_received_bytes_total", m), reporter)
	}
	assert.Zero(t, e.sum("istio_tcp_connections_closed_total", map[string]string{"destination_service_name": "web", "destination_workload": "unknown"}),
		"no ClusterIP connection with an unknown backend")
}

// testClusterIP: a client pod calls a Service's ClusterIP with two
// backend replicas. The client's series name the backend workload, the
// server's name the client, each pod on a Resource (series) of its own,
// bytes exact; the access logs join the two ends by tcp.connection.uid
// and the client's record names the backend pod it reached.
func testClusterIP(c *cluster, agent corev1.Pod) {
	t := c.t
	const conns = 20
	c.namespace("shop")
	svc, webs := c.server("shop", "web", 2, "", request, response, true)
	// At once: its first connections come before the API server has its
	// address; both ends are on this node, so both are named all the same.
	client := c.clientDeployment(clientSpec{ns: "shop", name: "client", target: svc.Spec.ClusterIP + ":80", conns: conns, request: request, response: response, delay: "0s"})
	c.waitLog("shop", client.Name, "done")

	out := map[string]string{"k8s_pod_name": client.Name, "direction": "outbound"}
	e := c.eventually(agent, "the client's closes", func(e exposition) bool {
		return e.sum("tcp_connections_closed_total", out) >= conns
	})
	assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", with(out, "peer_workload", "web", "peer_workload_kind", "Deployment", "peer_namespace", "shop")),
		"the client names the backend workload reached through the ClusterIP")
	assert.Equal(t, float64(conns*request), e.sum("tcp_bytes_sent_total", with(out, "peer_workload", "web")))
	assert.Equal(t, float64(conns*response), e.sum("tcp_bytes_received_total", with(out, "peer_workload", "web")))
	assert.Equal(t, float64(conns), e.sum("tcp_service_connections_closed_total",
		map[string]string{"destination_service_name": "web", "destination_service_namespace": "shop", "direction": "outbound"}))

	in := map[string]string{"direction": "inbound", "peer_workload": "client", "peer_namespace": "shop"}
	e = c.eventually(agent, "the servers' closes", func(e exposition) bool {
		return e.sum("tcp_connections_closed_total", in) >= conns
	})
	total := 0.0
	for _, p := range webs {
		byPod := with(in, "k8s_pod_name", p.Name, "job", "shop/web", "instance", "shop."+p.Name)
		n := e.sum("tcp_connections_closed_total", byPod)
		assert.Positive(t, n, "both replicas were reached (pod %s)", p.Name)
		assert.Equal(t, n*request, e.sum("tcp_bytes_received_total", byPod), "pod %s", p.Name)
		assert.Equal(t, n*response, e.sum("tcp_bytes_sent_total", byPod), "pod %s", p.Name)
		total += n
	}
	assert.Equal(t, float64(conns), total)
	// The agent's own series: its job and instance, the node's host.name.
	assert.Positive(t, e.sum("tcpconn_probe_records_total", map[string]string{"job": "otelcol-tcpconn-agent", "instance": kubenode.NodeName,
		"host_name": kubenode.NodeName, "k8s_node_name": kubenode.NodeName}))
	assert.Positive(t, e.sum("tcp_connections_closed_total", map[string]string{"job": "shop/web", "host_name": kubenode.NodeName}))

	// Access logs, through the gateway: each client close record names
	// the backend pod and joins one server record by uid.
	var clientRecs []map[string]any
	require.Eventually(t, func() bool {
		clientRecs = c.logs.closes("source.k8s.pod.name", client.Name)
		return len(clientRecs) >= conns*2 // each end's record names the client as source
	}, 100*time.Second, time.Second, "access logs of both ends through the gateway")
	byUID := map[string][]map[string]any{}
	for _, r := range clientRecs {
		uid := fmt.Sprint(r["tcp.connection.uid"])
		byUID[uid] = append(byUID[uid], r)
	}
	assert.Len(t, byUID, conns, "one uid per connection")
	podNames := map[string]bool{webs[0].Name: true, webs[1].Name: true}
	for uid, recs := range byUID {
		if !assert.Len(t, recs, 2, "uid %s: the client's and the server's records", uid) {
			continue
		}
		for _, r := range recs {
			assert.True(t, podNames[fmt.Sprint(r["destination.k8s.pod.name"])], "uid %s names the backend pod: %v", uid, r)
			assert.Equal(t, "web", r["destination.workload.name"])
			assert.Equal(t, "client", r["source.workload.name"])
		}
		assert.Equal(t, recs[0]["destination.k8s.pod.name"], recs[1]["destination.k8s.pod.name"], "both ends name the same backend")
	}
}

// with copies m and adds key/value pairs.
func with(m map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// testNode: kubelet's probes (from the bridge's address), this test's own
// process on the node and a hostNetwork pod reach the web pods: every one
// of them is the node, never an unknown peer.
func testNode(c *cluster, agent corev1.Pod) {
	t := c.t
	webs := c.waitPods("shop", "app=web", 2)
	// The node's own process (this test), straight to a pod.
	const conns = 3
	for i := 0; i < conns; i++ {
		exchange(t, net.JoinHostPort(webs[0].Status.PodIP, "8080"))
	}
	c.clientDeployment(clientSpec{ns: "shop", name: "hostnet", target: net.JoinHostPort(webs[1].Status.PodIP, "8080"), conns: conns,
		request: request, response: response, hostNetwork: true})
	node := map[string]string{"direction": "inbound", "peer_workload": kubenode.NodeName, "peer_workload_kind": "Node"}
	e := c.eventually(agent, "the node's connections to the pods", func(e exposition) bool {
		return e.sum("tcp_bytes_received_total", with(node, "k8s_pod_name", webs[0].Name)) >= conns*request &&
			e.sum("tcp_bytes_received_total", with(node, "k8s_pod_name", webs[1].Name)) >= conns*request
	})
	for _, p := range webs {
		probes := e.sum("tcp_connections_closed_total", with(node, "k8s_pod_name", p.Name))
		assert.Greater(t, probes, float64(conns), "kubelet's probes of %s are the node's", p.Name)
		assert.Zero(t, e.sum("tcp_connections_closed_total", map[string]string{"k8s_pod_name": p.Name, "direction": "inbound", "peer_workload": "unknown"}),
			"no connection to %s from an unknown peer", p.Name)
	}
	// On the node's side: its own end is the node (job node).
	assert.GreaterOrEqual(t, e.sum("tcp_bytes_sent_total", map[string]string{"job": "node", "instance": kubenode.NodeName, "direction": "outbound",
		"peer_workload": "web"}), float64(2*conns*request))
}

// exchange makes one client exchange from this process.
func exchange(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write(make([]byte, request))
	require.NoError(t, err)
	_, err = io.ReadFull(conn, make([]byte, response))
	require.NoError(t, err)
}

// testNodePortHeadless: the node's process calls a NodePort (DNAT and
// masquerade: the pod sees the node), a pod calls a headless Service's
// pod directly (no translation).
func testNodePortHeadless(c *cluster, agent corev1.Pod) {
	t := c.t
	const conns = 4
	c.namespace("edge")
	np, _ := c.server("edge", "np", 1, "NodePort", request, response, false)
	for i := 0; i < conns; i++ {
		exchange(t, net.JoinHostPort(kubenode.NodeIP, strconv.Itoa(int(np.Spec.Ports[0].NodePort))))
	}
	_, dbs := c.server("edge", "db", 1, "None", request, response, false)
	client := c.clientDeployment(clientSpec{ns: "edge", name: "reader", target: net.JoinHostPort(dbs[0].Status.PodIP, "8080"), conns: conns, request: request, response: response})
	c.waitLog("edge", client.Name, "done")

	npIn := map[string]string{"direction": "inbound", "k8s_deployment_name": "np", "peer_workload": kubenode.NodeName}
	npOut := map[string]string{"direction": "outbound", "job": "node", "peer_workload": "np", "peer_namespace": "edge"}
	dbOut := map[string]string{"direction": "outbound", "k8s_pod_name": client.Name, "peer_workload": "db"}
	dbIn := map[string]string{"direction": "inbound", "k8s_deployment_name": "db", "peer_workload": "reader"}
	e := c.eventually(agent, "NodePort and headless closes", func(e exposition) bool {
		return e.sum("tcp_connections_closed_total", npIn) >= conns && e.sum("tcp_connections_closed_total", dbIn) >= conns &&
			e.sum("tcp_connections_closed_total", npOut) >= conns && e.sum("tcp_connections_closed_total", dbOut) >= conns
	})
	for _, m := range []map[string]string{npIn, dbIn} {
		assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", m), "%v", m)
		assert.Equal(t, float64(conns*request), e.sum("tcp_bytes_received_total", m), "%v", m)
		assert.Equal(t, float64(conns*response), e.sum("tcp_bytes_sent_total", m), "%v", m)
	}
	for _, m := range []map[string]string{npOut, dbOut} {
		assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", m), "%v", m)
		assert.Equal(t, float64(conns*request), e.sum("tcp_bytes_sent_total", m), "%v", m)
	}
}

// testJobIPReuse: a Job's pod finishes and its IP goes to the next pod
// (the IPAM is told to hand it out again): the new pod's connections are
// the new pod's.
func testJobIPReuse(c *cluster, agent corev1.Pod) {
	t := c.t
	const conns = 3
	svc, err := c.client.CoreV1().Services("shop").Get(c.ctx(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	target := svc.Spec.ClusterIP + ":80"
	first := c.clientJob(clientSpec{ns: "shop", name: "batch-a", target: target, conns: conns, request: request, response: response})
	ip := first.Status.PodIP
	require.NotEmpty(t, ip)
	// host-local keeps a file per address in use and the last one given:
	// once batch-a's is released, the next pod gets it again.
	ipam := filepath.Join(c.node.Dir, "cni/ipam/tcpconn-pods")
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(ipam, ip))
		return os.IsNotExist(err)
	}, time.Minute, 200*time.Millisecond, "batch-a's address released")
	prev := net.ParseIP(ip).To4()
	prev[3]--
	require.NoError(t, os.WriteFile(filepath.Join(ipam, "last_reserved_ip.0"), []byte(prev.String()), 0o644))
	second := c.clientJob(clientSpec{ns: "shop", name: "batch-b", target: target, conns: conns, request: request, response: response})
	require.Equal(t, ip, second.Status.PodIP, "the second Job's pod has the first one's address")

	byJob := func(job string) map[string]string {
		return map[string]string{"direction": "inbound", "k8s_deployment_name": "web", "peer_workload": job, "peer_workload_kind": "Job"}
	}
	e := c.eventually(agent, "both Jobs' connections", func(e exposition) bool {
		return e.sum("tcp_connections_closed_total", byJob("batch-b")) >= conns && e.sum("tcp_connections_closed_total", byJob("batch-a")) >= conns
	})
	assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", byJob("batch-a")))
	assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", byJob("batch-b")))
	assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", map[string]string{"direction": "outbound", "k8s_pod_name": second.Name, "peer_workload": "web"}),
		"the second pod's own series")
}

// testMonotonic scrapes the agent across several flushes: no counter
// series ever goes down (two pods' series merged into one would flip
// between their values).
func testMonotonic(c *cluster, agent corev1.Pod) {
	t := c.t
	prev := map[string]float64{}
	for i := 0; i < 4; i++ {
		for _, s := range c.scrape(agent) {
			if !strings.HasSuffix(s.name, "_total") && !strings.HasSuffix(s.name, "_count") && !strings.HasSuffix(s.name, "_bucket") {
				continue
			}
			key := s.name + fmt.Sprint(s.labels)
			if p, ok := prev[key]; ok {
				assert.GreaterOrEqual(t, s.value, p, "counter went down: %s %v", s.name, s.labels)
			}
			prev[key] = s.value
		}
		if i < 3 {
			time.Sleep(31 * time.Second) // the shipped flush interval is 30 s
		}
	}
	assert.NotEmpty(t, prev)
	dashboardLabels(t, c.scrape(agent))
}

var byClause = regexp.MustCompile(`by \(([^)]*)\) \((?:rate\()?([a-z_]+)`)

// dashboardLabels: every label the otel dashboard groups a metric by is on
// that metric in the shipped agent's scrape.
func dashboardLabels(t *testing.T, e exposition) {
	raw, err := os.ReadFile(filepath.Join("dashboards", "tcpconn-otel.json"))
	require.NoError(t, err)
	have := map[string]map[string]bool{}
	for _, s := range e {
		if s.labels["k8s_pod_name"] == "" && s.labels["job"] != "otelcol-tcpconn-agent" {
			continue // an end no pod names has no pod labels to group by
		}
		if have[s.name] == nil {
			have[s.name] = map[string]bool{}
		}
		for k := range s.labels {
			have[s.name][k] = true
		}
	}
	checked := 0
	for _, m := range byClause.FindAllStringSubmatch(string(raw), -1) {
		metric := m[2]
		if have[metric] == nil {
			continue // a metric this run produced no pod's sample of (failures, say)
		}
		for _, l := range strings.Split(m[1], ",") {
			l = strings.TrimSpace(l)
			assert.True(t, have[metric][l], "the dashboard groups %s by %s, which the agent's scrape does not have", metric, l)
			checked++
		}
	}
	assert.Positive(t, checked)
}

// testRollout: the agent pod is replaced while a client holds connections
// open; the new agent adopts them with their direction and identities and
// counts only what they carry after it started: the two agents' counts
// add up to the exact traffic, nothing twice.
func testRollout(c *cluster) {
	t := c.t
	const conns = 5
	old := c.agent()
	svc, err := c.client.CoreV1().Services("shop").Get(c.ctx(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	holder := c.clientDeployment(clientSpec{ns: "shop", name: "holder", target: svc.Spec.ClusterIP + ":80", conns: conns, request: request, response: response, hold: true})
	c.waitLog("shop", holder.Name, "holding")
	out := map[string]string{"direction": "outbound", "k8s_pod_name": holder.Name, "peer_workload": "web"}
	before := c.eventually(old, "the held connections' first exchange", func(e exposition) bool {
		return e.sum("tcp_bytes_sent_total", out) >= conns*request
	})
	assert.Equal(t, float64(conns), before.sum("tcp_connections_opened_total", out))
	assert.Equal(t, float64(conns*request), before.sum("tcp_bytes_sent_total", out))

	require.NoError(t, c.client.CoreV1().Pods(old.Namespace).Delete(c.ctx(), old.Name, metav1.DeleteOptions{}))
	var agent corev1.Pod
	require.Eventually(t, func() bool {
		agent = c.agent()
		return agent.UID != old.UID
	}, 2*time.Minute, time.Second)
	c.waitLog(agent.Namespace, agent.Name, "connections open at start")
	e := c.eventually(agent, "the held connections adopted", func(e exposition) bool {
		return e.sum("tcp_connections_open", out) >= conns
	})
	assert.Equal(t, float64(conns), e.sum("tcp_connections_open", out), "adopted with direction and identity")

	signal(t, hostProcess(t, "/app", "client", "-hold"), syscall.SIGUSR1)
	c.waitLog("shop", holder.Name, "done")
	e = c.eventually(agent, "the held connections closed", func(e exposition) bool {
		return e.sum("tcp_connections_closed_total", out) >= conns
	})
	assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", out))
	assert.Zero(t, e.sum("tcp_connections_opened_total", out), "adopted connections are not opened again")
	assert.Equal(t, float64(conns*request), e.sum("tcp_bytes_sent_total", out), "only the exchange after the rollout")
	assert.Equal(t, float64(conns*response), e.sum("tcp_bytes_received_total", out))
	in := map[string]string{"direction": "inbound", "k8s_deployment_name": "web", "peer_workload": "holder"}
	assert.Equal(t, float64(conns), e.sum("tcp_connections_closed_total", in), "the servers' ends keep direction and identity")
	assert.Equal(t, float64(conns*request), e.sum("tcp_bytes_received_total", in))
}

// testAPIAway: the agent (re)starts while the API server is down. It is
// not Ready: the load_balancing exporter's Kubernetes resolver waits for
// its informer before the collector starts its receivers, so the agent
// exports nothing until the API server is back (README, Troubleshooting).
// Once it is back the agent starts, is Ready, says identity ok and names
// pods made since.
func testAPIAway(c *cluster) {
	t := c.t
	agent := c.agent()
	c.node.Stop("kube-apiserver")
	// kubelet restarts the container by itself, without the API server.
	signal(t, hostProcess(t, "/otelcol-tcpconn", "--config=/conf/agent.yaml"), syscall.SIGKILL)
	ready := "http://" + net.JoinHostPort(agent.Status.PodIP, "13134") + "/"
	require.Eventually(t, func() bool { return httpStatus(ready) == http.StatusServiceUnavailable }, 2*time.Minute, time.Second,
		"the agent without its API server is not Ready")
	time.Sleep(10 * time.Second)
	assert.Equal(t, http.StatusServiceUnavailable, httpStatus(ready), "still not Ready while the API server is away")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.node.Start(ctx, "kube-apiserver"))
	require.Eventually(t, func() bool { return httpStatus(ready) == http.StatusOK }, 2*time.Minute, time.Second, "Ready again")
	e := c.eventually(agent, "identity ok", func(e exposition) bool {
		return e.sum("tcpconn_identity_status", map[string]string{"state": "ok"}) == 1
	})
	assert.Zero(t, e.sum("tcpconn_identity_status", map[string]string{"state": "degraded"}))
	svc, err := c.client.CoreV1().Services("shop").Get(c.ctx(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	late := c.clientJob(clientSpec{ns: "shop", name: "late", target: svc.Spec.ClusterIP + ":80", conns: 2, request: request, response: response})
	c.eventually(agent, "a pod made after the API server came back, named", func(e exposition) bool {
		return e.sum("tcp_connections_closed_total", map[string]string{"k8s_pod_name": late.Name, "peer_workload": "web"}) == 2
	})
}

func httpStatus(url string) int {
	hc := http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
