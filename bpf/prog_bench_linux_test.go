package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// BenchmarkProgram measures the probe's tracepoint program by the kernel's
// own accounting (bpf_stats): b.N connections are opened and closed between
// two network namespaces and the program's run time is divided by the
// connections. Unlike the storm harness this does not move with the
// workload's scheduling, so it is the figure to compare program changes
// with; it leaves out the tracepoint's dispatch and work the kernel defers
// (freeing state), which the storm harness includes.
// `sudo make bench-prog`.
func BenchmarkProgram(b *testing.B) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		b.Run(string(mode), func(b *testing.B) { benchProgram(b, mode) })
	}
}

func benchProgram(b *testing.B, mode AttachMode) {
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 207)
	pair.Client.Exec(b, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
	target := sink(b, pair, "9100")

	p, unload := loadDrained(b, Options{Mode: mode})
	defer unload()

	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable bpf_stats: %v", err)
	}
	defer stats.Close()
	// The probe and its backup, which runs after it on every state change.
	progs := []*ebpf.Program{p.objs.prog, p.objs.backup}
	runs0, time0 := progStats(b, progs)

	b.ResetTimer()
	err = openAndClose(pair, target, b.N)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	runs1, time1 := progStats(b, progs)
	runs, ns := float64(runs1-runs0), float64(time1-time0)
	b.ReportMetric(ns/float64(b.N), "prog-ns/conn")
	b.ReportMetric(runs/float64(b.N), "runs/conn")
	b.ReportMetric(ns/runs, "ns/run")
}

// loadDrained loads the probe with a reader that discards its records;
// unload stops and closes it.
func loadDrained(b *testing.B, opts Options) (p *Probe, unload func()) {
	p, err := Load(opts)
	if err != nil {
		b.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		var rec Record
		for p.Read(&rec) != ErrStopped {
		}
	}()
	return p, func() { _ = p.Stop(); <-drained; _ = p.Close() }
}

// progStats sums the programs' run counts and run times.
func progStats(b *testing.B, progs []*ebpf.Program) (runs uint64, ns uint64) {
	for _, prog := range progs {
		st, err := prog.Stats()
		if err != nil {
			b.Fatal(err)
		}
		runs += st.RunCount
		ns += uint64(st.Runtime.Nanoseconds())
	}
	return runs, ns
}
