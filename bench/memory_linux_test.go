package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// BenchmarkCollectorMemory reports the collector's resident memory idle
// and with 10k and 100k open connections tracked (reports every 2s,
// metrics and access logs to a file). `make bench-memory`.
func BenchmarkCollectorMemory(b *testing.B) {
	for _, conns := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchCollectorMemory(b, conns) })
	}
}

func benchCollectorMemory(b *testing.B, conns int) {
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 207)
	// Reports every 2s, so that the open connections are walked.
	cmd, _ := collectorCmd(b, true, "    report_interval: 2s\n")
	o := startProcess(b, cmd, time.Second).(*processObserver)
	defer o.stop(b)
	idle := rss(b, o.cmd.Process.Pid)

	start := time.Now()
	netnstest.HoldInChildren(b, pair, conns)
	opened := time.Since(start)
	time.Sleep(5 * time.Second) // opens read, two report walks
	loaded := rss(b, o.cmd.Process.Pid)
	b.ReportMetric(float64(idle)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(float64(loaded)/(1<<20), "loaded-RSS-MiB")
	b.Logf("collector RSS %.1f MiB idle, %.1f MiB with %d open connections (%d tracked sockets, opened in %v)",
		float64(idle)/(1<<20), float64(loaded)/(1<<20), conns, 2*conns, opened)
}

// rss is a process's resident set from /proc/<pid>/status.
func rss(b *testing.B, pid int) int64 { return procStatus(b, pid, "VmRSS:") }
