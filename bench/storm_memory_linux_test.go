package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

var (
	stormRate = flag.Int("storm-rate", 5000, "connections per second BenchmarkCollectorMemoryStorm opens and closes")
	stormFor  = flag.Duration("storm-for", 60*time.Second, "how long BenchmarkCollectorMemoryStorm's storm lasts")
)

// BenchmarkCollectorMemoryStorm reports the collector's resident memory
// on a steady storm (5,000 connections/s for a minute by default): the
// agent manifest's pipeline (memory_limiter, batch, access logs, OTLP over
// gRPC to a second collector) in a cgroup with the manifest's memory
// limit and GOMEMLIMIT. It checks that every close record of both ends
// reached the second collector, or that what did not is counted by the
// receiver's drop counters. `make bench-memory`.
func BenchmarkCollectorMemoryStorm(b *testing.B) {
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 207)
	pair.Client.Exec(b, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
	sk := startSink(b)
	cmd, _ := otlpCollectorCmd(b, sk.endpoint, "snappy", 0) // as the agent manifest
	cmd.Env = append(os.Environ(), "GOMEMLIMIT=200MiB")     // deploy/agent/daemonset.yaml
	join := memoryCgroup(b, 256<<20)                        // the manifest's limit
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// Before the collector starts its components: memory_limiter reads
	// its limit from the cgroup then.
	join(cmd.Process.Pid)
	o := startProcess(b, cmd, 2*time.Second).(*processObserver)
	defer o.stop(b)
	idle := rss(b, o.cmd.Process.Pid)
	_, _ = sk.delivered(b) // the start-up's

	target := drainServer(b, pair.Server, netip.AddrPortFrom(pair.ServerIP, 9400))

	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for t := time.NewTicker(250 * time.Millisecond); ; <-t.C {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", o.cmd.Process.Pid)); err != nil || peak.Load() < 0 {
				t.Stop()
				return
			}
			if r := rss(b, o.cmd.Process.Pid); r > peak.Load() {
				peak.Store(r)
			}
		}
	}()
	conns, wall, err := pacedStorm(pair.Client, target, *stormRate, *stormFor)
	if err != nil {
		b.Fatal(err)
	}
	// The last records flushed (batch's second, the receiver's flush every
	// 5 s), and the last closes: the storm drops packets in the veths'
	// backlogs, and a FIN lost there is sent again, backing off.
	time.Sleep(15 * time.Second)
	top := peak.Swap(-1)
	<-sampled
	hwm := procStatus(b, o.cmd.Process.Pid, "VmHWM:")
	logs, _ := sk.delivered(b)
	b.ReportMetric(float64(conns)/wall.Seconds(), "conn/s")
	b.ReportMetric(float64(top)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(hwm)/(1<<20), "HWM-MiB")
	b.ReportMetric(float64(logs)/float64(2*conns), "records-delivered/2conns")
	b.Logf("%d connections in %v (%.0f/s): collector RSS %.1f MiB before, peak %.1f MiB sampled every 250 ms (VmHWM %.1f MiB); the second collector received %d log records (%d close records expected, two ends a connection)",
		conns, wall.Round(time.Millisecond), float64(conns)/wall.Seconds(), float64(idle)/(1<<20), float64(top)/(1<<20), float64(hwm)/(1<<20), logs, 2*conns)
	overflows, drops := pair.Server.Nstat(b, "TcpExtListenOverflows"), pair.Server.Nstat(b, "TcpExtListenDrops")
	b.Logf("the server's namespace: TcpExtListenOverflows %d, TcpExtListenDrops %d (handshakes whose server socket was never made: no server records)", overflows, drops)
	dropped, ring, lost := lastSum(b, sk.metrics, "tcpconn.logs.dropped"), lastSum(b, sk.metrics, "tcpconn.probe.records.dropped"), lastSum(b, sk.metrics, "tcpconn.connections.lost")
	b.Logf("the receiver's other counters: tcpconn.probe.records %d, tcpconn.probe.events.missed %d, tcpconn.logs.filtered %d (largest reason)",
		lastSum(b, sk.metrics, "tcpconn.probe.records"), lastSum(b, sk.metrics, "tcpconn.probe.events.missed"), lastSum(b, sk.metrics, "tcpconn.logs.filtered"))
	b.ReportMetric(float64(dropped), "logs-dropped")
	b.ReportMetric(float64(ring), "ring-dropped")
	b.Logf("dropped and counted: %d records by the receiver's logs queue (tcpconn.logs.dropped), %d by the probe's ring buffer (tcpconn.probe.records.dropped); %d connections' close records never arrived (tcpconn.connections.lost, found by the report walks)", dropped, ring, lost)
	if short := int64(2*conns - logs); short > dropped+ring+lost {
		b.Errorf("%d close records neither delivered nor counted as dropped or lost", short-dropped-ring-lost)
	}
}

// drainServer listens at addr in ns, until the benchmark ends, and closes
// each connection once its client has (the storms' server). It returns
// the address to dial.
func drainServer(b *testing.B, ns *netnstest.NS, addr netip.AddrPort) string {
	l, err := ns.Listen(addr.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return addr.String()
}

// pacedStorm opens and closes connections to target from ns at rate per
// second for d, in 10 ms steps (several clients, so that one slow connect
// does not hold the others), and returns how many it made.
func pacedStorm(ns *netnstest.NS, target string, rate int, d time.Duration) (int, time.Duration, error) {
	const step = 10 * time.Millisecond
	const clients = 4
	perStep := max(1, rate*int(step)/int(time.Second)/clients)
	var made atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			t := time.NewTicker(step)
			defer t.Stop()
			for deadline := start.Add(d); time.Now().Before(deadline); <-t.C {
				for range perStep {
					c, err := ns.Dial(context.Background(), target)
					if err != nil {
						errs <- err
						return
					}
					c.Close()
					made.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, fmt.Errorf("paced storm: %w", err)
	}
	return int(made.Load()), time.Since(start), nil
}

// memoryCgroup makes a memory cgroup limited to limit bytes (v1, where
// the memory controller is mounted on its own as here, else v2), removed
// when the benchmark ends, and returns what moves a process into it.
func memoryCgroup(b *testing.B, limit int64) (join func(pid int)) {
	root, file := "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
	if _, err := os.Stat(root); err != nil {
		root, file = "/sys/fs/cgroup", "memory.max"
	}
	dir := filepath.Join(root, fmt.Sprintf("tcpconn-bench-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		netnstest.Unavailable(b, "a memory cgroup under "+root+" ("+err.Error()+")")
	}
	b.Cleanup(func() {
		// Removable once the collector has exited (stopped before this).
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		b.Fatalf("limit the memory cgroup: %v", err)
	}
	return func(pid int) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			b.Fatalf("move the collector into its memory cgroup: %v", err)
		}
	}
}

// procStatus is a /proc/<pid>/status field in kB, as bytes.
func procStatus(b *testing.B, pid int, field string) int64 {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
