package bpf

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// BenchmarkWalk measures one report walk with 10k and 100k open
// connections (both ends tracked: 20k and 200k sockets), in wall time and
// CPU time of this process (the walk and the kernel's iterator run in it).
// `make bench-walk`.
func BenchmarkWalk(b *testing.B) {
	// 0: the walk of a quiet node, the scan of a free table.
	for _, conns := range []int{0, 10_000, 100_000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchWalk(b, conns) })
	}
}

func benchWalk(b *testing.B, conns int) {
	p := holdForWalk(b, conns)
	measureWalk(b, p, conns)
}

// holdForWalk loads the probe and holds conns connections open.
func holdForWalk(b *testing.B, conns int) *Probe {
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 209)
	// A table with room for the 200k sockets.
	p, err := Load(Options{Mode: AttachTPBTF, RingBufferBytes: 64 << 20, TrackedSockets: 256 << 10})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Close() })
	go func() { // keep the ring buffer drained
		var rec Record
		for p.Read(&rec) != ErrStopped {
		}
	}()

	start := time.Now()
	netnstest.HoldInChildren(b, pair, conns)
	b.Logf("opened %d connections in %v", conns, time.Since(start))
	return p
}

func measureWalk(b *testing.B, p *Probe, conns int) {
	// The first walk runs in each namespace (it finds the connections open
	// before the probe); the walks after read the tracked table.
	walked, err := p.Walk(func(*Record) {})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	for b.Loop() {
		walked, err = p.Walk(func(*Record) {})
		if err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if walked < 2*conns {
		b.Fatalf("walk saw %d sockets, want at least %d", walked, 2*conns)
	}
	b.ReportMetric(float64(walked), "sockets")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/walk")
}

var walkNamespaces = flag.Int("walk.namespaces", 10, "network namespaces BenchmarkWalkNamespaces adds to the host's (pods)")

// BenchmarkWalkNamespaces is BenchmarkWalk at 100k connections with ten
// network namespaces more (-walk.namespaces): idle ones (no TCP socket, which the walk
// skips), then the same each with a listener, as pods have (the kernel's
// socket hash is the host's: the iterator scans all of it in each).
func BenchmarkWalkNamespaces(b *testing.B) {
	const conns = 100_000
	extra := *walkNamespaces
	p := holdForWalk(b, conns)
	var nss []*netnstest.NS
	for i := range extra {
		nss = append(nss, netnstest.NewNS(b, fmt.Sprintf("tcw%d-%d", os.Getpid()%100000, i)))
	}
	b.Run(fmt.Sprintf("idle=%d", extra), func(b *testing.B) { measureWalk(b, p, conns) })
	for _, ns := range nss {
		l, err := ns.Listen("127.0.0.1:7000")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
	}
	b.Run(fmt.Sprintf("listening=%d", extra), func(b *testing.B) { measureWalk(b, p, conns) })
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReadListenStats: what each report walk adds per network
// namespace to read its listener counters (netstat, the namespace's
// inode and an address through netlink), in the calling namespace.
func BenchmarkReadListenStats(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readListenStats(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadBacklogs: what each report walk adds per network namespace
// to read its listeners' accept queues through sock_diag, in the calling
// namespace.
func BenchmarkReadBacklogs(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, diagBuf)
	for b.Loop() {
		if err := readBacklogs(buf, func(netip.Addr, uint16, uint32, uint32) {}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNetnsFinder: what each walk spends finding the host's network
// namespaces, reading every process's (a walk in netnsFullScan, and the
// first) or only new processes' (the others).
func BenchmarkNetnsFinder(b *testing.B) {
	netnstest.RequireRoot(b)
	b.Run("every-process", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var f netnsFinder
			f.list()
		}
	})
	b.Run("new-processes", func(b *testing.B) {
		b.ReportAllocs()
		var f netnsFinder
		f.list()
		for b.Loop() {
			if f.walks%netnsFullScan == 0 {
				f.walks++ // measure the walks between full scans
			}
			f.list()
		}
	})
}
