package kubenode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/tcpconn/tcpconn/internal/kubetest"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The node's names and addresses: 10.210/16 and 10.211/16 are this
// package's alone among the project's tests.
const (
	Version     = "1.34.4"
	NodeName    = "tcpconn-node"
	NodeIP      = "10.210.0.1" // on lo: the API server, kubelet and NodePorts
	PodCIDR     = "10.210.64.0/24"
	PodGateway  = "10.210.64.1" // the bridge's address: kubelet probes come from it
	ServiceCIDR = "10.211.0.0/16"
	APIPort     = 6443
	KubeletPort = 10250
	Bridge      = "tcpconn-br0"
	// PauseImage is every pod's sandbox, built like the test workloads.
	PauseImage = "tcpconn.test/pause:1"
)

// Options says how to bring a node up.
type Options struct {
	// Dir holds every file and the state Down reads; created if missing.
	Dir string
	// BinDir holds the Kubernetes binaries (make kube-bin node-bin).
	BinDir string
	// ProxyMode is kube-proxy's mode: iptables (default) or nftables.
	ProxyMode string
	// Images are OCI or docker-archive tarballs imported into containerd
	// before pods start (the agent's image, the test workloads').
	Images []string
}

// Node is a running single-node cluster.
type Node struct {
	Options
	state state
}

// state is what Down needs, kept in Dir/state.json so another process can
// take the node down.
type state struct {
	Pids  map[string]int      `json:"pids"`
	Args  map[string][]string `json:"args"`
	Host  hostState           `json:"host"`
	Order []string            `json:"order"`
}

func (n *Node) path(name string) string { return filepath.Join(n.Dir, name) }

// Kubeconfig is the admin kubeconfig's path.
func (n *Node) Kubeconfig() string { return n.path("kubeconfig") }

// Client is an admin clientset.
func (n *Node) Client() (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	return kubernetes.NewForConfig(cfg)
}

// Missing names the binaries and commands a node needs that this machine
// lacks (empty when it has them all).
func Missing(binDir string) []string {
	var missing []string
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			missing = append(missing, b+" (make node-bin)")
		}
	}
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "nft", "iptables", "conntrack"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			missing = append(missing, "/usr/lib/cni/"+p+" (Debian containernetworking-plugins)")
		}
	}
	return missing
}

// Up brings the node up and waits until it is Ready. On error what started
// is taken down again.
func Up(ctx context.Context, opts Options) (n *Node, err error) {
	if opts.ProxyMode == "" {
		opts.ProxyMode = "iptables"
	}
	if m := Missing(opts.BinDir); len(m) > 0 {
		return nil, &MissingError{What: m}
	}
	n = &Node{Options: opts, state: state{Pids: map[string]int{}, Args: map[string][]string{}}}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if derr := Down(n.Dir); derr != nil {
				err = fmt.Errorf("%w (and taking it down: %v)", err, derr)
			}
		}
	}()
	n.state.Host, err = saveHost()
	if err != nil {
		return n, err
	}
	if err := n.save(); err != nil {
		return n, err
	}
	if err := prepareHost(); err != nil {
		return n, fmt.Errorf("prepare host: %w", err)
	}
	p, err := newPKI(n.path("pki"))
	if err != nil {
		return n, err
	}
	if err := p.issue("apiserver", "kube-apiserver", nil, NodeIP, "10.211.0.1", "kubernetes",
		"kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", "127.0.0.1"); err != nil {
		return n, err
	}
	if err := p.issue("admin", "admin", []string{"system:masters"}); err != nil {
		return n, err
	}
	if err := p.issue("kubelet", "system:node:"+NodeName, []string{"system:nodes"}); err != nil {
		return n, err
	}
	if err := n.writeFiles(p); err != nil {
		return n, err
	}
	if err := n.startControlPlane(ctx, p); err != nil {
		return n, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return n, err
	}
	if err := n.startKubelet(ctx); err != nil {
		return n, err
	}
	if err := n.start("kube-proxy", "--config="+n.path("kube-proxy.yaml"), "--v=1"); err != nil {
		return n, err
	}
	return n, n.poll(ctx, "kube-proxy's rules", 60*time.Second, func() (bool, error) { return n.Programmed("10.211.0.1"), nil })
}

// Programmed says whether kube-proxy has written a rule for the Service
// address ip (the kubernetes Service's is 10.211.0.1), in the tables of
// its mode, and a translation to each of backends (endpoint addresses)
// when given: the Service's rule can come before all its endpoints are in
// it, and a client connecting then reaches the first ones only.
func (n *Node) Programmed(ip string, backends ...string) bool {
	var out []byte
	if n.ProxyMode == "nftables" {
		out, _ = exec.Command("nft", "list", "table", "ip", "kube-proxy").Output()
	} else {
		out, _ = exec.Command("iptables", "-t", "nat", "-S").Output()
	}
	if !bytes.Contains(out, []byte(ip)) {
		return false
	}
	for _, b := range backends {
		// "--to-destination 10.x.y.z:port" (iptables), "dnat ip to
		// 10.x.y.z:port" (nftables).
		if !bytes.Contains(out, []byte(b+":")) {
			return false
		}
	}
	return true
}

// MissingError says what a node needs that this machine lacks.
type MissingError struct{ What []string }

func (e *MissingError) Error() string { return fmt.Sprintf("a Kubernetes node needs %v", e.What) }

func (n *Node) startControlPlane(ctx context.Context, p *pki) error {
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(kubetest.FreePort())
	peer := "http://127.0.0.1:" + strconv.Itoa(kubetest.FreePort())
	if err := n.start("etcd", "--name=node", "--data-dir="+n.path("etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=node="+peer, "--unsafe-no-fsync", "--log-level=error"); err != nil {
		return err
	}
	if err := n.start("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address="+NodeIP,
		"--advertise-address="+NodeIP,
		"--secure-port="+strconv.Itoa(APIPort),
		"--tls-cert-file="+p.path("apiserver.crt"),
		"--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--kubelet-client-certificate="+p.path("admin.crt"),
		"--kubelet-client-key="+p.path("admin.key"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.path("sa.pub"),
		"--service-account-signing-key-file="+p.path("sa.key"),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--v=0"); err != nil {
		return err
	}
	if err := n.waitAPI(ctx); err != nil {
		return err
	}
	kc := "--kubeconfig=" + n.Kubeconfig()
	if err := n.start("kube-controller-manager", kc,
		"--service-account-private-key-file="+p.path("sa.key"),
		"--root-ca-file="+p.path("ca.crt"),
		"--use-service-account-credentials=true",
		"--leader-elect=false", "--secure-port=0", "--v=0"); err != nil {
		return err
	}
	return n.start("kube-scheduler", kc, "--leader-elect=false", "--secure-port=0", "--v=0")
}

func (n *Node) waitAPI(ctx context.Context) error {
	c, err := n.Client()
	if err != nil {
		return err
	}
	return n.poll(ctx, "kube-apiserver", 60*time.Second, func() (bool, error) {
		_, err := c.Discovery().ServerVersion()
		return err == nil, nil
	})
}

func (n *Node) startContainerd(ctx context.Context) error {
	if err := n.start("containerd", "--config="+n.path("containerd/config.toml")); err != nil {
		return err
	}
	if err := n.poll(ctx, "containerd", 30*time.Second, func() (bool, error) {
		_, err := os.Stat(n.socket())
		return err == nil, nil
	}); err != nil {
		return err
	}
	for _, img := range n.Images {
		if out, err := exec.CommandContext(ctx, "ctr", "--address", n.socket(), "-n", "k8s.io",
			"images", "import", img).CombinedOutput(); err != nil {
			return fmt.Errorf("import image %s: %w: %s", img, err, out)
		}
	}
	return nil
}

func (n *Node) startKubelet(ctx context.Context) error {
	if err := n.start("kubelet", "--config="+n.path("kubelet/config.yaml"),
		"--kubeconfig="+n.path("kubelet.kubeconfig"),
		"--root-dir="+n.path("kubelet"), "--cert-dir="+n.path("kubelet/pki"),
		"--hostname-override="+NodeName, "--node-ip="+NodeIP, "--v=1"); err != nil {
		return err
	}
	c, err := n.Client()
	if err != nil {
		return err
	}
	return n.poll(ctx, "node Ready", 90*time.Second, func() (bool, error) {
		node, err := c.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

// poll calls ok until it says so, failing with the logs of what exited.
func (n *Node) poll(ctx context.Context, what string, timeout time.Duration, ok func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := ok()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		for _, name := range n.state.Order {
			if pid := n.state.Pids[name]; pid != 0 && !alive(pid) {
				return fmt.Errorf("%s exited while waiting for %s: %s", name, what, n.LogTail(name))
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// start runs one of the node's parts detached, its output in Dir/logs.
func (n *Node) start(name string, args ...string) error {
	bin := filepath.Join(n.BinDir, name)
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath(name); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(n.path("logs"), 0o755); err != nil {
		return err
	}
	log, err := os.Create(n.path("logs/" + name + ".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }() // reaped here while this process lives
	if _, again := n.state.Args[name]; !again {
		n.state.Order = append(n.state.Order, name)
	}
	n.state.Pids[name] = cmd.Process.Pid
	n.state.Args[name] = args
	return n.save()
}

// Stop stops one of the node's parts (kube-apiserver, say), which Start
// brings back with the same arguments.
func (n *Node) Stop(name string) {
	stop(n.state.Pids[name])
	n.state.Pids[name] = 0
}

// Start starts a part Stop stopped, and for the API server waits until it
// answers.
func (n *Node) Start(ctx context.Context, name string) error {
	if err := n.start(name, n.state.Args[name]...); err != nil {
		return err
	}
	if name == "kube-apiserver" {
		return n.waitAPI(ctx)
	}
	return nil
}

// LogTail is the end of a part's log.
func (n *Node) LogTail(name string) string {
	b, _ := os.ReadFile(n.path("logs/" + name + ".log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func (n *Node) save() error {
	b, err := json.MarshalIndent(n.state, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(n.path("state.json"), b, 0o600)
}

// Down stops what Up started in dir, in reverse order, removes every pod's
// processes, mounts, network namespaces and cgroups, and restores the host.
func Down(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("node state %s: %w", dir, err)
	}
	var errs []error
	// The kubelet first, so nothing restarts the pods killed below.
	for i := len(st.Order) - 1; i >= 0; i-- {
		stop(st.Pids[st.Order[i]])
	}
	errs = append(errs, killPods(), restoreHost(st.Host, dir))
	return errors.Join(errs...)
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie has exited: "pid (comm) Z ...".
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && b[i+2] != 'Z'
		}
	}
	return true
}

// stop asks a part's process group to end, then kills it.
func stop(pid int) {
	if !alive(pid) {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for i := 0; i < 50 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
}
