package deploy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // the gateway compresses
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/tcpconn/tcpconn/internal/kubenode"
)

// cluster is a real node running the agent from deploy/ as users install
// it: kubectl apply -k with only the image's endpoints patched (the
// gateways send to sinks of this test on the node's address).
type cluster struct {
	t       *testing.T
	node    *kubenode.Node
	client  kubernetes.Interface
	kubectl string
	logs    *logSink
}

// agentImage is what `make image` writes.
const agentImage = "../dist/otelcol-tcpconn-image.tar"

func startCluster(t *testing.T, mode, kustomization string) *cluster {
	k := kubectl(t)
	n := kubenode.Start(t, mode, agentImage)
	c, err := n.Client()
	require.NoError(t, err)
	cl := &cluster{t: t, node: n, client: c, kubectl: k, logs: startLogSink(t)}
	cl.deployAgent(kustomization)
	return cl
}

func (c *cluster) ctx() context.Context { return context.Background() }

// run runs kubectl against the node.
func (c *cluster) run(stdin string, args ...string) string {
	c.t.Helper()
	cmd := exec.Command(c.kubectl, append([]string{"--kubeconfig", c.node.Kubeconfig()}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	require.NoError(c.t, err, "kubectl %v: %s", args, out)
	return string(out)
}

// deployAgent renders a kustomization of deploy/, points the gateways at
// this test's sinks (the only change), applies it and waits until the
// agent and a gateway are Ready.
func (c *cluster) deployAgent(kustomization string) {
	rendered := c.run("", "kustomize", kustomization)
	sink := "http://" + kubenode.NodeIP + ":" + strconv.Itoa(c.logs.httpPort) + "/api/v1/write"
	patched := strings.NewReplacer(
		"http://prometheus.observability.svc:9090/api/v1/write", sink,
		"otlp-backend.observability.svc:4317", c.logs.addr,
		"otelcol-tcpconn-gateway.otelcol-tcpconn.svc:4317", c.logs.addr, // the istio overlay's agents send logs straight out
	).Replace(rendered)
	// The sink speaks OTLP without TLS.
	patched = regexp.MustCompile(`(name: LOGS_INSECURE\s+value: )"false"`).ReplaceAllString(patched, `$1"true"`)
	require.NotEqual(c.t, rendered, patched, "the gateway's endpoints were not found in the manifests")
	c.run(patched, "apply", "-f", "-")
	c.waitPods("otelcol-tcpconn", "app.kubernetes.io/component=agent", 1)
	if strings.Contains(rendered, "name: otelcol-tcpconn-gateway\n") {
		c.waitPods("otelcol-tcpconn", "app.kubernetes.io/component=gateway", 1)
	}
}

// waitPods waits until n pods match selector and are Ready, and returns them.
func (c *cluster) waitPods(ns, selector string, n int) []corev1.Pod {
	c.t.Helper()
	var ready []corev1.Pod
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		pods, err := c.client.CoreV1().Pods(ns).List(c.ctx(), metav1.ListOptions{LabelSelector: selector})
		require.NoError(c.t, err)
		ready = ready[:0]
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				ready = append(ready, p)
			}
		}
		if len(ready) >= n {
			return ready
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.t.Fatalf("%d Ready pods %s in %s not there after 3m (%d): %s", n, selector, ns, len(ready),
		c.run("", "get", "pods", "-A", "-o", "wide"))
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// agent is the agent pod on the node.
func (c *cluster) agent() corev1.Pod {
	return c.waitPods("otelcol-tcpconn", "app.kubernetes.io/component=agent", 1)[0]
}

// namespace creates a namespace for a scenario.
func (c *cluster) namespace(name string) {
	_, err := c.client.CoreV1().Namespaces().Create(c.ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(c.t, err)
}

// server runs replicas of testapp serve behind a Service of kind svcType
// ("" for ClusterIP, "None" for headless, "NodePort") and waits for them.
func (c *cluster) server(ns, name string, replicas int32, svcType string, request, response int, probes bool) (*corev1.Service, []corev1.Pod) {
	labels := map[string]string{"app": name}
	ctr := corev1.Container{
		Name: name, Image: kubenode.AppImage,
		Args:  []string{"serve", "-port", "8080", "-health", "8081", "-request", strconv.Itoa(request), "-response", strconv.Itoa(response)},
		Ports: []corev1.ContainerPort{{Name: "app", ContainerPort: 8080}, {Name: "health", ContainerPort: 8081}},
	}
	if probes {
		ctr.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("health")}}, PeriodSeconds: 2}
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{ctr}}},
		},
	}
	_, err := c.client.AppsV1().Deployments(ns).Create(c.ctx(), d, metav1.CreateOptions{})
	require.NoError(c.t, err)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	switch svcType {
	case "None":
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	case "NodePort":
		svc.Spec.Type = corev1.ServiceTypeNodePort
	}
	svc, err = c.client.CoreV1().Services(ns).Create(c.ctx(), svc, metav1.CreateOptions{})
	require.NoError(c.t, err)
	pods := c.waitPods(ns, "app="+name, int(replicas))
	if svcType != "None" {
		var backends []string
		for _, p := range pods {
			backends = append(backends, p.Status.PodIP)
		}
		c.waitProgrammed(svc.Spec.ClusterIP, backends...)
	}
	return svc, pods
}

// waitProgrammed waits until kube-proxy has a rule for the ClusterIP and
// translates it to each of backends, so that a client's first connect is
// translated, and connections spread over every backend.
func (c *cluster) waitProgrammed(ip string, backends ...string) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if c.node.Programmed(ip, backends...) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("kube-proxy did not program %s to %v", ip, backends)
}

// clientSpec is one testapp client pod.
type clientSpec struct {
	ns, name, target  string
	conns             int
	request, response int
	hold, hostNetwork bool
	// delay before the first connection: 3s when empty (see podSpec).
	delay string
}

func (s clientSpec) podSpec(restart corev1.RestartPolicy) corev1.PodSpec {
	// The API server publishes a pod's address a moment after its
	// containers start. A connection before that is named on both ends
	// when both are on this node (the client by its namespace, the server's
	// peer by the client's socket), but a pod that takes a finished pod's
	// address would be named as that pod by the other end (README,
	// Troubleshooting): clients wait for it unless a test says not to.
	delay := s.delay
	if delay == "" {
		delay = "3s"
	}
	args := []string{"client", "-delay", delay, "-target", s.target, "-conns", strconv.Itoa(s.conns),
		"-request", strconv.Itoa(s.request), "-response", strconv.Itoa(s.response)}
	if s.hold {
		args = append(args, "-hold")
	}
	if restart == corev1.RestartPolicyAlways {
		args = append(args, "-stay")
	}
	return corev1.PodSpec{
		RestartPolicy: restart, HostNetwork: s.hostNetwork,
		Containers: []corev1.Container{{Name: s.name, Image: kubenode.AppImage, Args: args}},
	}
}

// clientDeployment runs a client that stays when done, and returns its pod.
func (c *cluster) clientDeployment(s clientSpec) corev1.Pod {
	labels := map[string]string{"app": s.name}
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: s.podSpec(corev1.RestartPolicyAlways)},
		},
	}
	_, err := c.client.AppsV1().Deployments(s.ns).Create(c.ctx(), d, metav1.CreateOptions{})
	require.NoError(c.t, err)
	return c.waitPods(s.ns, "app="+s.name, 1)[0]
}

// clientJob runs a client as a Job and waits until it succeeded.
func (c *cluster) clientJob(s clientSpec) corev1.Pod {
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.ns},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": s.name}},
			Spec:       s.podSpec(corev1.RestartPolicyNever),
		}},
	}
	_, err := c.client.BatchV1().Jobs(s.ns).Create(c.ctx(), j, metav1.CreateOptions{})
	require.NoError(c.t, err)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		pods, err := c.client.CoreV1().Pods(s.ns).List(c.ctx(), metav1.ListOptions{LabelSelector: "app=" + s.name})
		require.NoError(c.t, err)
		for _, p := range pods.Items {
			switch p.Status.Phase {
			case corev1.PodSucceeded:
				return p
			case corev1.PodFailed:
				c.t.Fatalf("job %s failed: %s", s.name, c.run("", "-n", s.ns, "logs", p.Name))
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.t.Fatalf("job %s did not finish", s.name)
	return corev1.Pod{}
}

// waitLog waits until a pod's log says want.
func (c *cluster) waitLog(ns, pod, want string) {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var out []byte
	for time.Now().Before(deadline) {
		out, _ = exec.Command(c.kubectl, "--kubeconfig", c.node.Kubeconfig(), "-n", ns, "logs", pod).CombinedOutput()
		if strings.Contains(string(out), want) {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	c.t.Fatalf("pod %s/%s never logged %q: %s", ns, pod, want, out)
}

// hostProcess finds the node's process whose command line has every part
// (the test's pods run on this machine: with the host's PID namespace the
// test signals them directly).
func hostProcess(t *testing.T, parts ...string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		ok := cmd != ""
		for _, p := range parts {
			ok = ok && strings.Contains(cmd, p)
		}
		if ok {
			return pid
		}
	}
	t.Fatalf("no process running %v", parts)
	return 0
}

func signal(t *testing.T, pid int, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, syscall.Kill(pid, sig))
}

// exposition is one scrape of a Prometheus exporter.
type exposition []sample

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func parseExposition(r io.Reader) (exposition, error) {
	var e exposition
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, labels := line, "", map[string]string{}
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			name, rest = line[:i], strings.TrimSpace(line[j+1:])
			for _, m := range labelRE.FindAllStringSubmatch(line[i+1:j], -1) {
				labels[m[1]] = m[2]
			}
		} else if f := strings.Fields(line); len(f) >= 2 {
			name, rest = f[0], f[1]
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			return nil, fmt.Errorf("sample %q: %w", line, err)
		}
		e = append(e, sample{name, labels, v})
	}
	return e, sc.Err()
}

// sum adds the samples of name whose labels include every pair of match
// (a value "!x" matches any value but x).
func (e exposition) sum(name string, match map[string]string) float64 {
	var total float64
	for _, s := range e {
		if s.name == name && matches(s.labels, match) {
			total += s.value
		}
	}
	return total
}

func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if strings.HasPrefix(v, "!") {
			if labels[k] == v[1:] {
				return false
			}
		} else if labels[k] != v {
			return false
		}
	}
	return true
}

// scrape reads the agent's Prometheus exporter as Prometheus would.
func (c *cluster) scrape(pod corev1.Pod) exposition {
	c.t.Helper()
	e, err := tryScrape(pod)
	require.NoError(c.t, err)
	return e
}

func tryScrape(pod corev1.Pod) (exposition, error) {
	hc := http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + net.JoinHostPort(pod.Status.PodIP, "9464") + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return parseExposition(resp.Body)
}

// eventually scrapes the agent until ok holds (the agent flushes every
// 30 s, as shipped) and returns that scrape.
func (c *cluster) eventually(pod corev1.Pod, what string, ok func(exposition) bool) exposition {
	c.t.Helper()
	deadline := time.Now().Add(100 * time.Second)
	for {
		e, err := tryScrape(pod) // the agent may be restarting
		if err == nil && ok(e) {
			return e
		}
		if time.Now().After(deadline) {
			for _, s := range e {
				if s.name == "tcp_connections_closed_total" {
					c.t.Logf("%s %v %v", s.name, s.labels, s.value)
				}
			}
			c.t.Fatalf("the agent's scrape never showed %s", what)
		}
		time.Sleep(2 * time.Second)
	}
}

// logSink is what the gateways export to: OTLP logs over gRPC, and a
// remote-write endpoint that takes everything (metrics are read from the
// agent's scrape here).
type logSink struct {
	plogotlp.UnimplementedGRPCServer
	addr     string
	httpPort int
	mu       sync.Mutex
	records  []map[string]any
}

func startLogSink(t *testing.T) *logSink {
	s := &logSink{}
	// On the node's address (lo, once the node is up): the gateway pods
	// reach it through the bridge.
	l, err := net.Listen("tcp", net.JoinHostPort(kubenode.NodeIP, "0"))
	require.NoError(t, err)
	s.addr = l.Addr().String()
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	plogotlp.RegisterGRPCServer(srv, s)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	hl, err := net.Listen("tcp", net.JoinHostPort(kubenode.NodeIP, "0"))
	require.NoError(t, err)
	s.httpPort = hl.Addr().(*net.TCPAddr).Port
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(hl) }()
	t.Cleanup(func() { _ = hs.Close() })
	return s
}

// Export keeps every record's attributes.
func (s *logSink) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	ld := req.Logs()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < ld.ResourceLogs().Len(); i++ {
		sls := ld.ResourceLogs().At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				s.records = append(s.records, record(lrs.At(k)))
			}
		}
	}
	return plogotlp.NewExportResponse(), nil
}

func record(lr plog.LogRecord) map[string]any {
	m := lr.Attributes().AsRaw()
	m["event.name"] = lr.EventName()
	return m
}

// closes returns the close records where attribute key has value.
func (s *logSink) closes(key, value string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, r := range s.records {
		if r["event.name"] == "tcp.connection.close" && fmt.Sprint(r[key]) == value {
			out = append(out, r)
		}
	}
	return out
}
