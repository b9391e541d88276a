// Package kubetest runs a real etcd and kube-apiserver on loopback for
// tests, built from Go modules by `make kube-bin`. Nothing else of a
// cluster runs: tests create nodes, owners, pods (setting their IPs through
// the status subresource), services and EndpointSlices themselves.
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Version is the Kubernetes version `make kube-bin` builds.
const Version = "1.34.4"

// BinDir is where the binaries are looked for: $KUBE_BIN_DIR, else the
// cache directory `make kube-bin` fills.
func BinDir() string {
	if d := os.Getenv("KUBE_BIN_DIR"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "tcpconn", "kube-"+Version)
}

// Server is a running etcd + kube-apiserver pair.
type Server struct {
	dir       string
	etcdURL   string
	apiPort   int
	token     string
	etcd      *process
	apiserver *process
	mu        sync.Mutex
}

// Start runs etcd and kube-apiserver for the test binary's lifetime. When
// the binaries are missing it skips, or fails where KUBETEST_REQUIRED=1 or
// CI=true.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := start(tb.TempDir())
	if err != nil {
		if os.IsNotExist(err) {
			unavailable(tb, err.Error())
		}
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

func unavailable(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("KUBETEST_REQUIRED") == "1" || os.Getenv("CI") == "true" {
		tb.Fatalf("kube-apiserver prerequisite missing: %s (run `make kube-bin`)", why)
	}
	tb.Skipf("kube-apiserver prerequisite missing: %s (run `make kube-bin`)", why)
}

func start(dir string) (*Server, error) {
	bin := BinDir()
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, err
		}
	}
	s := &Server{dir: dir, token: "tcpconn-test-admin-token"}
	if err := s.writeFiles(); err != nil {
		return nil, err
	}
	clientPort, peerPort, apiPort := FreePort(), FreePort(), FreePort()
	s.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	s.apiPort = apiPort
	var err error
	s.etcd, err = run(filepath.Join(bin, "etcd"),
		"--name=default",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+s.etcdURL,
		"--advertise-client-urls="+s.etcdURL,
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-cluster=default=http://127.0.0.1:%d", peerPort),
		"--unsafe-no-fsync",
		"--log-level=error",
	)
	if err != nil {
		return nil, err
	}
	if err := s.StartAPIServer(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) writeFiles() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	files := map[string][]byte{
		"sa.key":     priv,
		"sa.pub":     pub,
		"tokens.csv": []byte(s.token + ",admin,admin-uid,system:masters\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// StartAPIServer (re)starts kube-apiserver on the same port and etcd, and
// waits until it is ready.
func (s *Server) StartAPIServer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := run(filepath.Join(BinDir(), "kube-apiserver"),
		"--etcd-servers="+s.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(s.apiPort),
		"--cert-dir="+filepath.Join(s.dir, "certs"),
		"--token-auth-file="+filepath.Join(s.dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(s.dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(s.dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false",
		"--v=0",
	)
	if err != nil {
		return err
	}
	s.apiserver = p
	return s.waitReady(60 * time.Second)
}

// StopAPIServer stops kube-apiserver, leaving etcd and its data.
func (s *Server) StopAPIServer() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apiserver != nil {
		s.apiserver.stop()
		s.apiserver = nil
	}
}

// Close stops both processes.
func (s *Server) Close() {
	s.StopAPIServer()
	if s.etcd != nil {
		s.etcd.stop()
		s.etcd = nil
	}
}

// Host is the API server URL.
func (s *Server) Host() string { return fmt.Sprintf("https://127.0.0.1:%d", s.apiPort) }

// Config is an admin client configuration.
func (s *Server) Config() *rest.Config {
	return &rest.Config{Host: s.Host(), BearerToken: s.token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
}

// Client is an admin clientset.
func (s *Server) Client(tb testing.TB) kubernetes.Interface {
	tb.Helper()
	c, err := kubernetes.NewForConfig(s.Config())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// WriteKubeconfig writes an admin kubeconfig and returns its path.
func (s *Server) WriteKubeconfig(dir string) (string, error) {
	path := filepath.Join(dir, "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, s.Host(), s.token)
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

func (s *Server) waitReady(timeout time.Duration) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s.apiserver.exited() {
			return fmt.Errorf("kube-apiserver exited: %s", s.apiserver.output())
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, s.Host()+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %v: %s", timeout, s.apiserver.output())
}

type process struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
}

func run(bin string, args ...string) (*process, error) {
	p := &process{cmd: exec.Command(bin, args...), out: new(bytes.Buffer), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.out.Bytes()
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

type lockedWriter struct{ p *process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

func FreePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
