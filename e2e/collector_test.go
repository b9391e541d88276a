package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// collectorBinary finds the collector built by `make build`.
func collectorBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("OTELCOL_TCPCONN")
	if bin == "" {
		bin = filepath.Join("..", "bin", "otelcol-tcpconn")
	}
	if _, err := os.Stat(bin); err != nil {
		netnstest.Unavailable(t, fmt.Sprintf("collector binary %s (run `make build`): %v", bin, err))
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// collector is one running otelcol-tcpconn process.
type collector struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	health int
	waited chan error
}

// startCollector runs the binary with config and env and waits until its
// health check reports ready.
func startCollector(t *testing.T, config string, env map[string]string) *collector {
	t.Helper()
	return startCollectorArgs(t, []string{collectorBinary(t)}, config, env)
}

// startCollectorArgs is startCollector with a command line that wraps the
// binary (setpriv, say).
func startCollectorArgs(t *testing.T, argv []string, config string, env map[string]string) *collector {
	t.Helper()
	c := &collector{out: new(syncBuffer), waited: make(chan error, 1)}
	c.cmd = exec.Command(argv[0], append(argv[1:], "--config", config)...)
	c.cmd.Env = os.Environ()
	if _, ok := env["TEST_LOCK"]; !ok {
		// Each collector its own node lock: tests run collectors side by side.
		c.cmd.Env = append(c.cmd.Env, "TEST_LOCK="+filepath.Join(t.TempDir(), "lock"))
	}
	for k, v := range env {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	c.health, _ = strconv.Atoi(env["TEST_HEALTH_PORT"])
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start collector: %v", err)
	}
	go func() { c.waited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			<-c.waited
		}
		if t.Failed() {
			t.Logf("collector output:\n%s", c.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-c.waited:
			t.Fatalf("collector exited during start: %v\n%s", err, c.out.String())
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", c.health))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("collector not ready after 30s:\n%s", c.out.String())
	return nil
}

// output is what the collector has printed so far.
func (c *collector) output() string { return c.out.String() }

// syncBuffer is a bytes.Buffer safe for the process's writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// stop sends SIGTERM and waits for a clean exit.
func (c *collector) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal collector: %v", err)
	}
	select {
	case err := <-c.waited:
		if err != nil {
			t.Fatalf("collector exit: %v\n%s", err, c.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("collector did not stop within 30s")
	}
}

// scrape returns the Prometheus exposition of the collector's exporter.
func scrape(ctx context.Context, port int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// sample finds the value of the series with this name whose labels include
// all of want ("k=v" pairs). It returns -1 when there is none.
func sample(exposition, name string, want ...string) float64 {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			k, v, _ := strings.Cut(w, "=")
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			return f
		}
	}
	return -1
}
