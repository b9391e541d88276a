package bpf

import (
	"fmt"
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
	for _, conns := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchWalk(b, conns) })
	}
}

func benchWalk(b *testing.B, conns int) {
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 209)
	p, err := Load(Options{Mode: AttachTPBTF, RingBufferBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	go func() { // keep the ring buffer drained
		var rec Record
		for p.Read(&rec) != ErrStopped {
		}
	}()

	start := time.Now()
	netnstest.HoldInChildren(b, pair, conns)
	b.Logf("opened %d connections in %v", conns, time.Since(start))

	var walked int
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
