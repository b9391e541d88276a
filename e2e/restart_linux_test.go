package e2e

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// progIDs lists the BPF programs a process holds, from its fdinfo.
func progIDs(t *testing.T, pid int) []string {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fdinfo")
	fds, err := os.ReadDir(dir)
	require.NoError(t, err)
	var ids []string
	for _, fd := range fds {
		b, err := os.ReadFile(filepath.Join(dir, fd.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok && !slices.Contains(ids, strings.TrimSpace(v)) {
				ids = append(ids, strings.TrimSpace(v))
			}
		}
	}
	return ids
}

// TestRestartUnderLoad stops and starts the collector while connections
// keep opening and one long-lived connection spans the restart: the first
// collector's programs are gone once it stops, and the second adopts the
// spanning connection, reports its close, and counts only what it carried
// after the restart.
func TestRestartUnderLoad(t *testing.T) {
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		netnstest.Unavailable(t, "bpftool")
	}
	pair := netnstest.NewPair(t, testOctet)
	dir := t.TempDir()
	lock := filepath.Join(dir, "lock")
	env := func(out string, prom int) map[string]string {
		return map[string]string{"TEST_CIDR": pair.ServerIP.String() + "/24", "TEST_OUT": filepath.Join(dir, out),
			"TEST_PROM_PORT": strconv.Itoa(prom), "TEST_HEALTH_PORT": strconv.Itoa(freePort(t)), "TEST_LOCK": lock}
	}

	// Load: short connections all along.
	srv := netnstest.StartServer(t, pair, 8080, 100, 100)
	ctx, stop := context.WithCancel(context.Background())
	var load sync.WaitGroup
	load.Go(func() {
		for ctx.Err() == nil {
			_, _ = srv.Exchange(context.Background(), pair) // never cut short: the server checks every request
			time.Sleep(20 * time.Millisecond)
		}
	})
	defer func() { stop(); load.Wait() }()
	// The long-lived connection, to a sink.
	l, err := pair.Server.Listen(pair.ServerIP.String() + ":8090")
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()

	first := startCollector(t, filepath.Join("testdata", "pipeline.yaml"), env("first.json", freePort(t)))
	held := progIDs(t, first.cmd.Process.Pid)
	require.Len(t, held, 7, "the two report iterators (each namespace's sockets, the tracked table), the tracepoint program, its backup, the reset marker (tcp_send_reset) and the retransmit counter (tcp_retransmit_skb) with its backup")
	long, err := pair.Client.Dial(context.Background(), pair.ServerIP.String()+":8090")
	require.NoError(t, err)
	_, err = long.Write(make([]byte, 7000))
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond)
	first.stop(t)
	// The kernel frees tracing programs after an RCU grace period.
	for _, id := range held {
		assert.Eventually(t, func() bool {
			return exec.Command(bpftool, "prog", "show", "id", id).Run() != nil
		}, 10*time.Second, 50*time.Millisecond, "program %s outlived the first collector", id)
	}

	prom := freePort(t)
	second := startCollector(t, filepath.Join("testdata", "pipeline.yaml"), env("second.json", prom))
	// The start-up walk, which adopts the connection and tells its
	// direction, runs after Start: a close it has not seen comes with no
	// direction, and a client's SYN would stay in its bytes sent (README,
	// tcp.bytes.sent).
	require.Eventually(t, func() bool { return strings.Contains(second.output(), "connections open at start") },
		10*time.Second, 20*time.Millisecond)
	_, err = long.Write(make([]byte, 3000))
	require.NoError(t, err)
	require.NoError(t, long.Close())
	port := int64(long.LocalAddr().(*net.TCPAddr).Port)
	time.Sleep(1500 * time.Millisecond) // a flush after the close
	stop()
	load.Wait()
	second.stop(t)

	logs, _ := readFileExport(t, filepath.Join(dir, "second.json.logs"))
	var found bool
	for _, lr := range logs {
		a := lr.Attributes().AsRaw()
		// The client end's record (now that adopted connections keep their
		// direction, the server end's names the client as its source too).
		if lr.EventName() != "tcp.connection.close" || a["source.port"] != port || a["source.address"] != pair.ClientIP.String() ||
			a["network.peer.address"] != pair.ServerIP.String() {
			continue
		}
		found = true
		assert.Equal(t, true, a["tcpconn.adopted"], "the spanning connection was adopted")
		assert.Equal(t, int64(10000), a["tcp.bytes.sent"], "its close record carries its total")
	}
	assert.True(t, found, "the second collector reported the spanning connection's close")
	_, metrics := readFileExport(t, filepath.Join(dir, "second.json.metrics"))
	assert.Positive(t, metrics["tcp.connections.opened"], "the second collector counts new connections")
}
