package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// The capabilities the agent needs (deploy/agent/daemonset.yaml).
const agentCaps = "+bpf,+perfmon,+sys_admin,+sys_ptrace,+net_admin"

// TestRunsWithOnlyItsCapabilities runs the collector as an unprivileged
// user holding only the agent's capabilities: it starts and reports
// connections. With CAP_BPF missing it fails to start and says what is
// missing.
func TestRunsWithOnlyItsCapabilities(t *testing.T) {
	netnstest.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		netnstest.Unavailable(t, "setpriv (util-linux)")
	}
	bin := collectorBinary(t)
	pair := netnstest.NewPair(t, testOctet)
	// The unprivileged collector writes here: t.TempDir's parent is 0700.
	dir, err := os.MkdirTemp("", "tcpconn-caps-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	out := filepath.Join(dir, "out.json")
	prom := freePort(t)
	env := map[string]string{
		"TEST_CIDR": pair.ServerIP.String() + "/24", "TEST_OUT": out,
		"TEST_PROM_PORT": strconv.Itoa(prom), "TEST_HEALTH_PORT": strconv.Itoa(freePort(t)),
		"TEST_LOCK": filepath.Join(dir, "lock"),
	}
	withCaps := func(caps string) []string {
		return []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
			"--inh-caps=-all," + caps, "--ambient-caps=-all," + caps, "--bounding-set=-all," + caps, bin}
	}

	col := startCollectorArgs(t, withCaps(agentCaps), filepath.Join("testdata", "pipeline.yaml"), env)
	srv := netnstest.StartServer(t, pair, 8080, 1000, 100)
	_, err = srv.Exchange(context.Background(), pair)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		exp, err := scrape(context.Background(), prom)
		return err == nil && sample(exp, "tcp_connections_closed_total", "direction=inbound") == 1
	}, 20*time.Second, 100*time.Millisecond, "no connection reported with the agent's capabilities")
	col.stop(t)

	argv := withCaps("+perfmon,+sys_ptrace")
	cmd := exec.Command(argv[0], append(argv[1:], "--config", filepath.Join("testdata", "pipeline.yaml"))...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	done := make(chan []byte, 1)
	go func() { b, _ := cmd.CombinedOutput(); done <- b }()
	select {
	case b := <-done:
		assert.Contains(t, string(b), "cannot load the tcpconn probe: missing capabilities CAP_BPF", "the start error names what is missing")
		assert.NotEqual(t, 0, cmd.ProcessState.ExitCode())
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("collector without CAP_BPF did not fail")
	}
}

// TestSecondCollectorRefused: a second collector on the node, sharing the
// node lock, fails to start and says why; the first keeps running.
func TestSecondCollectorRefused(t *testing.T) {
	netnstest.RequireRoot(t)
	lock := filepath.Join(t.TempDir(), "lock")
	env := func() map[string]string {
		return map[string]string{"TEST_CIDR": "10.203.250.0/24", "TEST_OUT": filepath.Join(t.TempDir(), "out.json"),
			"TEST_PROM_PORT": strconv.Itoa(freePort(t)), "TEST_HEALTH_PORT": strconv.Itoa(freePort(t)), "TEST_LOCK": lock}
	}
	first := startCollector(t, filepath.Join("testdata", "pipeline.yaml"), env())
	cmd := exec.Command(collectorBinary(t), "--config", filepath.Join("testdata", "pipeline.yaml"))
	cmd.Env = os.Environ()
	for k, v := range env() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "the second collector started")
	assert.Contains(t, string(out), "another tcpconn probe is running on this node")
	first.stop(t)
}
