package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/internal/pairstat"
)

const (
	stormClients = 4
	stormEnv     = "TCPCONN_STORM"
)

// Knobs for narrowing a run while working on one mode, e.g.
// go test ./bench -bench Overhead -args -overhead.modes=baseline,probe -overhead.rounds=10
var (
	// collector-kube and collector-nat (Kubernetes identity from a real
	// API server, conntrack lookups off and on), and their
	// collector-metrics-* variants without access logs, send every mode's
	// storm through a ClusterIP; they are not in the default run.
	modesFlag  = flag.String("overhead.modes", "baseline,attach-only,probe,probe-nobackup,collector-metrics,collector,collector-otlp,collector-otlp-snappy,tcplife", "modes to alternate; the baseline is always run")
	roundsFlag = flag.Int("overhead.rounds", 20, "rounds, each running every mode once")
	connsFlag  = flag.Int("overhead.conns", 2000, "connections per client per round")
	// The probe's cost is per connection, not per byte: a connection that
	// carries a request and its response makes the same records.
	payloadFlag = flag.Int("overhead.payload", 0, "bytes of request, and as many of response, on each connection; 0: open and close only")
)

// stormResult is what one storm child reports about itself.
type stormResult struct {
	Conns  int
	WallNs int64
	CPUNs  int64
	// NodeNs is the busy time of all CPUs during the storm (/proc/stat):
	// it also counts what the storm leaves to kernel threads (softirq,
	// RCU callbacks) and whatever observes it.
	NodeNs int64
}

// observer is what watches the storm in one mode; stop returns the CPU it
// used while watching.
type observer interface {
	stop(b *testing.B) time.Duration
}

// overheadModes is the baseline followed by the other selected modes.
func overheadModes() []string {
	out := []string{"baseline"}
	for m := range strings.SplitSeq(*modesFlag, ",") {
		if m = strings.TrimSpace(m); m != "" && m != "baseline" {
			out = append(out, m)
		}
	}
	return out
}

// BenchmarkOverhead alternates the modes round by round and prints, per
// mode, the median connection rate, the storm's own CPU per connection,
// the observer's CPU per connection, and the ratio of total CPU to the
// baseline of the same round.
func BenchmarkOverhead(b *testing.B) {
	netnstest.RequireRoot(b)
	modes := overheadModes()
	var sn stormNet
	if slices.ContainsFunc(modes, serviceMode) {
		sn = newServiceNet(b)
	} else {
		pair := netnstest.NewPair(b, 204)
		// Client-closed connections leave TIME_WAIT behind: reuse those ports.
		pair.Client.Exec(b, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
		sn = stormNet{server: pair.Server.Name, client: pair.Client.Name, listen: pair.ServerIP, dial: pair.ServerIP}
	}
	ensureTracefs(b)

	type sample struct{ rate, work, obs, node float64 }
	res := map[string][]sample{}
	port := 9000
	// The probe's own counts, summed per probe mode.
	counts := map[string]*bpf.Stats{}
	for round := range *roundsFlag {
		// Each round starts with a different mode, so that a drift within
		// a round (TIME_WAIT sockets piling up, say) favours none of them.
		for k := range modes {
			mode := modes[(round+k)%len(modes)]
			port++
			if sn.route != nil {
				sn.route(port)
			}
			o := start(b, mode, &sn)
			r := runStorm(b, &sn, port)
			var obs time.Duration
			if o != nil {
				obs = o.stop(b)
			}
			if po, ok := o.(*probeObserver); ok {
				c := counts[mode]
				if c == nil {
					c = &bpf.Stats{}
					counts[mode] = c
				}
				c.Dropped += po.st.Dropped
				c.Missed += po.st.Missed
				c.Skipped += po.st.Skipped
				c.Rescued += po.st.Rescued
			}
			n := float64(r.Conns)
			s := sample{n / time.Duration(r.WallNs).Seconds(), float64(r.CPUNs) / 1e3 / n, float64(obs.Nanoseconds()) / 1e3 / n, float64(r.NodeNs) / 1e3 / n}
			res[mode] = append(res[mode], s)
			b.Logf("round %d %-9s %6.0f conn/s storm %6.1f observer %5.2f node %6.1f µs/conn", round+1, mode, s.rate, s.work, s.obs, s.node)
		}
	}

	var table strings.Builder
	fmt.Fprintf(&table, "| mode | conn/s | storm CPU µs/conn | observer CPU µs/conn | added µs/conn | added, 95 %% interval of the median | total vs baseline | node CPU µs/conn | node added µs/conn |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, mode := range modes {
		var rate, work, obs, added, ratio, node, nodeAdded []float64
		for i, s := range res[mode] {
			base := res["baseline"][i]
			rate, work, obs, node = append(rate, s.rate), append(work, s.work), append(obs, s.obs), append(node, s.node)
			added = append(added, s.work+s.obs-base.work)
			ratio = append(ratio, (s.work+s.obs)/base.work)
			nodeAdded = append(nodeAdded, s.node-base.node)
		}
		lo, hi := pairstat.MedianInterval(added)
		fmt.Fprintf(&table, "| %s | %.0f | %.1f | %.2f | %.1f | %.1f to %.1f | %.3f | %.1f | %.1f |\n", mode, pairstat.Median(rate), pairstat.Median(work), pairstat.Median(obs), pairstat.Median(added),
			lo, hi, pairstat.Median(ratio), pairstat.Median(node), pairstat.Median(nodeAdded))
		b.ReportMetric(pairstat.Median(ratio), mode+"-cpu-ratio")
	}
	for _, mode := range modes {
		if c := counts[mode]; c != nil {
			b.ReportMetric(float64(c.Dropped), mode+"-kernel-drops")
			b.ReportMetric(float64(c.Missed), mode+"-kernel-missed")
			b.Logf("%s: %d records dropped (ring buffer full); the kernel skipped the probe %d times (recursion), %d of them taken by its backup, %d missed",
				mode, c.Dropped, c.Skipped, c.Rescued, c.Missed)
		}
	}
	// Modes paired with another than the baseline: the cost of what one
	// adds to the other, round by round.
	for mode, other := range map[string]string{"collector-nat": "collector-kube", "collector-metrics-nat": "collector-metrics-kube"} {
		if res[mode] == nil || res[other] == nil {
			continue
		}
		var added []float64
		for i, s := range res[mode] {
			o := res[other][i]
			added = append(added, s.work+s.obs-(o.work+o.obs))
		}
		lo, hi := pairstat.MedianInterval(added)
		fmt.Fprintf(&table, "\n%s against %s, paired per round: %.1f µs/conn added (95 %% interval of the median %.1f to %.1f)\n", mode, other, pairstat.Median(added), lo, hi)
		b.ReportMetric(pairstat.Median(added), mode+"-vs-"+other+"-us/conn")
	}
	if sn.route != nil {
		fmt.Fprintf(&table, "\nEvery mode's storm went to a ClusterIP the node namespace translated (DNAT) to the server pod.\n")
	}
	b.Logf("%d rounds of %d connections each, modes alternating; medians, paired per round:\n%s",
		*roundsFlag, stormClients**connsFlag, table.String())
}

// stormNet is where the storms run: the server's and the clients'
// network namespaces, the address the server listens on and the one the
// clients dial (a ClusterIP, or the server's own).
type stormNet struct {
	server, client string
	listen, dial   netip.Addr
	// route, when set, makes the node translate dial:port to listen:port
	// before a storm on port.
	route func(port int)
	// collector is the receiver configuration the *-kube and *-nat modes
	// add (a format taking nat.enabled); env their process's environment
	// (KUBECONFIG).
	collector string
	env       []string
	// sink is the second collector the collector-otlp mode exports to,
	// started at its first round; its CPU is not counted.
	sink *sink
}

// serviceMode: a mode that needs the storm to go through a Service.
func serviceMode(mode string) bool {
	return strings.HasSuffix(mode, "-kube") || strings.HasSuffix(mode, "-nat")
}

// The overhead harness's ClusterIP storms use 10.206.22.0/24.
var serviceNetPrefix = [3]byte{10, 206, 22}

// newServiceNet is a node namespace routing a client pod and a server pod,
// as in the NAT tests, and a real API server holding the node, both pods
// and a Service whose ClusterIP the node translates to the server pod as
// kube-proxy's iptables mode does (one KUBE-SVC chain per storm port, so
// that every storm has fresh ports as with a pair of namespaces).
func newServiceNet(b *testing.B) stormNet {
	if _, err := exec.LookPath("conntrack"); err != nil {
		netnstest.Unavailable(b, "the conntrack command (Debian package conntrack)")
	}
	routed := netnstest.NewRouted(b, serviceNetPrefix, 2)
	routed.Pods[0].Exec(b, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
	nodeIP := netip.AddrFrom4([4]byte{serviceNetPrefix[0], serviceNetPrefix[1], serviceNetPrefix[2], 1})
	routed.NodeAddress(b, nodeIP)
	api := kubetest.Start(b)
	obj := kubetest.Objects{TB: b, Client: api.Client(b)}
	obj.Namespace("bench", "client", "server")
	obj.Node("node-a", nodeIP.String())
	obj.Pod(kubetest.PodSpec{Namespace: "bench", Name: "client-0", Node: "node-a", ServiceAccount: "client",
		IP: routed.PodIPs[0].String(), Labels: map[string]string{"app": "client"}})
	server := obj.Pod(kubetest.PodSpec{Namespace: "bench", Name: "server-0", Node: "node-a", ServiceAccount: "server",
		IP: routed.PodIPs[1].String(), Labels: map[string]string{"app": "server"}})
	clusterIP := netip.MustParseAddr(obj.Service("bench", "server", "", 9000, 9000, server))
	kubeconfig, err := api.WriteKubeconfig(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return stormNet{
		server: routed.Pods[1].Name, client: routed.Pods[0].Name, listen: routed.PodIPs[1], dial: clusterIP,
		route: func(port int) {
			// The node's conntrack keeps a closed connection 120 s
			// (TIME_WAIT): 8000 a storm fill its table (262144) in
			// nine rounds of four modes, and then it drops SYNs.
			routed.Node.Exec(b, "conntrack", "-F")
			routed.KubeProxyService(b, fmt.Sprint("OVH", port), clusterIP, uint16(port), netip.AddrPortFrom(routed.PodIPs[1], uint16(port)))
		},
		collector: fmt.Sprintf("    kubernetes: {enabled: true, auth_type: kubeConfig, node_name: node-a}\n"+
			"    nat: {enabled: %%v, netns: %s}\n", routed.NodePath()),
		env: []string{"KUBECONFIG=" + kubeconfig},
	}
}

// start begins observing in a mode; nil for the baseline.
func start(b *testing.B, mode string, sn *stormNet) observer {
	// A collector-otlp mode may name environment variables for the
	// collector after a "+" each: collector-otlp-zstd+GOGC=200.
	mode, env, _ := strings.Cut(mode, "+")
	if env != "" && !strings.HasPrefix(mode, "collector-otlp") {
		b.Fatalf("overhead mode %s+%s: only the collector-otlp modes take environment variables", mode, env)
	}
	switch mode {
	case "collector-metrics-kube", "collector-metrics-nat":
		cmd, _ := collectorCmd(b, false, fmt.Sprintf(sn.collector, mode == "collector-metrics-nat"))
		cmd.Env = append(os.Environ(), sn.env...)
		return startProcess(b, cmd, 3*time.Second) // the informers synchronised
	case "collector-kube", "collector-nat":
		cmd, out := collectorCmd(b, true, fmt.Sprintf(sn.collector, mode == "collector-nat"))
		cmd.Env = append(os.Environ(), sn.env...)
		o := startProcess(b, cmd, 3*time.Second) // the informers synchronised
		o.(*processObserver).check = func() {
			// Each client end's close record of a translated connection
			// keeps the address dialled.
			// Both ends' close records, for scale (the logs pipeline
			// drops whole batches when the file exporter lags).
			n := countInFile(b, out+".logs", `"tcpconn.dialled.address"`)
			closes := countInFile(b, out+".logs", `"tcp.connection.close"`)
			if (n > 0) != (mode == "collector-nat") {
				b.Fatalf("%s: %d access-log records of translated connections", mode, n)
			}
			b.Logf("%s: %d access-log records of translated connections, %d close and %d failure records in all; records read %d (tcpconn.probe.records); dropped: %d by the receiver's logs queue (tcpconn.logs.dropped), %d by the probe's ring buffer (tcpconn.probe.records.dropped)",
				mode, n, closes, countInFile(b, out+".logs", `"tcp.connection.failure"`), lastSum(b, out, "tcpconn.probe.records"),
				lastSum(b, out, "tcpconn.logs.dropped"), lastSum(b, out, "tcpconn.probe.records.dropped"))
		}
		return o
	case "probe":
		return startProbe(b, bpf.Options{})
	case "collector":
		cmd, _ := collectorCmd(b, true, "")
		return startProcess(b, cmd, time.Second)
	case "collector-file-proto":
		// The file exporter writing OTLP protobuf instead of JSON.
		cmd, _ := collectorCmd(b, true, "", "format: proto")
		return startProcess(b, cmd, time.Second)
	case "collector-otlp", "collector-otlp-none", "collector-otlp-snappy", "collector-otlp-zstd", "collector-otlp-gzip",
		"collector-otlp-batch", "collector-otlp-none-batch", "collector-otlp-snappy-batch", "collector-otlp-zstd-batch", "collector-otlp-gzip-batch":
		if sn.sink == nil {
			sn.sink = startSink(b)
		}
		// The OTLP exporter's default compression (gzip), or the one the
		// mode names; -batch: with the batch processors (timeout 1s) the
		// agent manifest had.
		name, withBatch := strings.CutSuffix(mode, "-batch")
		var batchTimeout time.Duration
		if withBatch {
			batchTimeout = time.Second
		}
		compression := strings.TrimPrefix(strings.TrimPrefix(name, "collector-otlp"), "-")
		cmd, logPath := otlpCollectorCmd(b, sn.sink.endpoint, compression, batchTimeout)
		if env != "" {
			cmd.Env = append(os.Environ(), strings.Split(env, "+")...)
		}
		o := startProcess(b, cmd, time.Second)
		o.(*processObserver).check = func() {
			// What reached the second collector: both ends' close records
			// of every connection, if the pipeline kept up.
			// The second collector may still be writing what it received.
			logs, points := sn.sink.delivered(b)
			for range 10 {
				time.Sleep(200 * time.Millisecond)
				l, p := sn.sink.delivered(b)
				if l == 0 && p == 0 {
					break
				}
				logs, points = logs+l, points+p
			}
			c := sn.sink.counters(b, "tcpconn.probe.records", "tcpconn.logs.dropped", "tcpconn.probe.records.dropped")
			b.Logf("%s: the second collector received %d log records and %d metric points this round; the receiver read %d records, dropped %d access-log records (tcpconn.logs.dropped), the ring buffer %d", mode, logs, points, c[0], c[1], c[2])
			if raw, _ := os.ReadFile(logPath); bytes.Contains(raw, []byte("\terror\t")) || bytes.Contains(raw, []byte("\twarn\t")) {
				b.Logf("%s: the collector's own log: %s", mode, raw)
			}
		}
		return o
	case "collector-metrics":
		cmd, _ := collectorCmd(b, false, "")
		return startProcess(b, cmd, time.Second)
	case "probe-nobackup":
		return startProbe(b, bpf.Options{NoBackup: true})
	case "probe-raw":
		return startProbe(b, bpf.Options{Mode: bpf.AttachRawTP})
	case "attach-only":
		return startNoop(b)
	case "tcplife":
		bin, err := exec.LookPath("tcplife")
		if err != nil {
			if _, err = os.Stat("/usr/sbin/tcplife"); err != nil {
				netnstest.Unavailable(b, "tcplife (Debian package libbpf-tools)")
			}
			bin = "/usr/sbin/tcplife"
		}
		return startProcess(b, exec.Command(bin), time.Second)
	case "baseline":
		return nil
	}
	b.Fatalf("unknown overhead mode %q (baseline, probe, probe-nobackup, probe-raw, attach-only, collector, collector-file-proto, collector-otlp[-none|-snappy|-zstd|-gzip][-batch], collector-metrics, collector-kube, collector-nat, collector-metrics-kube, collector-metrics-nat, tcplife)", mode)
	return nil
}

// probeObserver is the probe loaded in this process with one reader thread.
type probeObserver struct {
	p    *bpf.Probe
	done chan time.Duration
	st   bpf.Stats // the probe's counters when it stopped
}

func startProbe(b *testing.B, opts bpf.Options) observer {
	p, err := bpf.Load(opts)
	if err != nil {
		b.Fatal(err)
	}
	o := &probeObserver{p: p, done: make(chan time.Duration, 1)}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0 := threadCPU()
		var rec bpf.Record
		for {
			if err := p.Read(&rec); errors.Is(err, bpf.ErrStopped) {
				o.done <- threadCPU() - t0
				return
			}
		}
	}()
	return o
}

func (o *probeObserver) stop(b *testing.B) time.Duration {
	_ = o.p.Stop()
	cpu := <-o.done
	st, err := o.p.Stats()
	if err != nil {
		b.Fatalf("probe stats: %v", err)
	}
	if st.Dropped > 0 {
		// Reported, not fatal: the table is still worth having.
		b.Logf("the probe dropped %d of %d records (ring buffer full)", st.Dropped, st.Emitted+st.Dropped)
	}
	o.st = st
	_ = o.p.Close()
	return cpu
}

// noopObserver is a program that returns at once, on the probe's
// tracepoint: what attaching alone costs, the floor under any probe there.
type noopObserver struct {
	prog *ebpf.Program
	l    link.Link
}

func startNoop(b *testing.B) observer {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "inet_sock_set_state",
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		b.Fatalf("load the no-op program: %v", err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		prog.Close()
		b.Fatalf("attach the no-op program: %v", err)
	}
	return &noopObserver{prog: prog, l: l}
}

func (o *noopObserver) stop(*testing.B) time.Duration {
	o.l.Close()
	o.prog.Close()
	return 0
}

// processObserver is an observer in its own process: its CPU is read from
// /proc before it is stopped.
type processObserver struct {
	cmd  *exec.Cmd
	cpu0 time.Duration
	// check, when set, runs after the process exited.
	check func()
}

// startProcess starts cmd and gives it ready to load, attach (and
// synchronise) before the storm: its CPU is counted from then.
func startProcess(b *testing.B, cmd *exec.Cmd, ready time.Duration) observer {
	if cmd.Stdout == nil {
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	}
	if cmd.Process == nil { // not started by the caller
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(ready)
	return &processObserver{cmd: cmd, cpu0: procCPU(cmd.Process.Pid)}
}

func (o *processObserver) stop(b *testing.B) time.Duration {
	time.Sleep(200 * time.Millisecond) // the last records are read
	cpu := procCPU(o.cmd.Process.Pid) - o.cpu0
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	_ = o.cmd.Wait()
	if o.check != nil {
		o.check()
	}
	return cpu
}

// countInFile counts the occurrences of s in the file at path.
func countInFile(b *testing.B, path, s string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return bytes.Count(raw, []byte(s))
}

// lastSum is the largest value a Sum metric of that name took in the file
// exporter's output (its self-metrics are cumulative).
func lastSum(b *testing.B, path, name string) int64 {
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return largestSum(raw, name)
}

// largestSum is the largest value a Sum metric of that name took in raw,
// the file exporter's JSON lines.
func largestSum(raw []byte, name string) int64 {
	var most int64
	for _, line := range bytes.Split(raw, []byte("\n")) {
		md, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(line)
		if err != nil || md.ResourceMetrics().Len() == 0 {
			continue // a logs line, or empty
		}
		rms := md.ResourceMetrics()
		for i := range rms.Len() {
			sms := rms.At(i).ScopeMetrics()
			for j := range sms.Len() {
				ms := sms.At(j).Metrics()
				for k := range ms.Len() {
					if m := ms.At(k); m.Name() == name && m.Type() == pmetric.MetricTypeSum {
						for d := range m.Sum().DataPoints().Len() {
							most = max(most, m.Sum().DataPoints().At(d).IntValue())
						}
					}
				}
			}
		}
	}
	return most
}

// collectorCmd runs bin/otelcol-tcpconn: probe, receiver, batch and the
// file exporter, metrics and, with logs, access logs (one per closed
// connection end, the default); extra is more of the receiver's
// configuration, lines indented by four spaces; fileOpts, more of both
// file exporters' (one flow-style entry, e.g. "format: proto"). It returns
// the command and the file the metrics and access logs go to.
func collectorCmd(b *testing.B, logs bool, extra string, fileOpts ...string) (*exec.Cmd, string) {
	opts := ""
	for _, o := range fileOpts {
		opts += ", " + o
	}
	bin := collectorBin(b)
	dir := b.TempDir()
	cfg := filepath.Join(dir, "collector.yaml")
	logsPipeline := ""
	if logs {
		logsPipeline = "    logs: {receivers: [tcpconn], processors: [batch], exporters: [file/logs]}\n"
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`receivers:
  tcpconn:
    probe: {lock_file: %s/lock}
%sprocessors:
  batch: {}
exporters:
  file: {path: %s/out.json%s}
  file/logs: {path: %s/out.json.logs%s}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    metrics: {receivers: [tcpconn], processors: [batch], exporters: [file]}
%s`, dir, extra, dir, opts, dir, opts, logsPipeline)), 0o644); err != nil {
		b.Fatal(err)
	}
	return exec.Command(bin, "--config", cfg), filepath.Join(dir, "out.json")
}

// collectorBin is the ocb-built collector, bin/otelcol-tcpconn.
func collectorBin(b *testing.B) string {
	bin, err := filepath.Abs(filepath.Join("..", "bin", "otelcol-tcpconn"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		netnstest.Unavailable(b, "bin/otelcol-tcpconn (run `make build`)")
	}
	return bin
}

// procCPU is a process's CPU time: its thread group's CPU clock
// (clock_gettime on the process's CPUCLOCK_SCHED clock id), the run time
// of every thread, exited ones included, to the nanosecond. (The sum of
// /proc/<pid>/task/*/schedstat left out exited threads, and the
// receiver's walk ends its thread after each walk: it entered other
// network namespaces. /proc/<pid>/stat counts in 10 ms ticks.) 0 when
// the process is gone.
func procCPU(pid int) time.Duration {
	const cpuclockSched = 2
	var ts unix.Timespec
	if err := unix.ClockGettime(int32((^pid)<<3|cpuclockSched), &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// ensureTracefs mounts tracefs where tcplife looks up tracepoints.
func ensureTracefs(b *testing.B) {
	if _, err := os.Stat("/sys/kernel/tracing/events/sock"); err == nil {
		return
	}
	_ = unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, "")
}

// runStorm runs one storm in a child process (this test binary) and
// returns what the child measured of itself.
func runStorm(b *testing.B, sn *stormNet, port int) stormResult {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%s:%d,%d,%d,%s:%d", stormEnv, sn.server, sn.client, sn.listen, port, *connsFlag, *payloadFlag, sn.dial, port))
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("storm child: %v: %s", err, out)
	}
	line := out[:max(0, strings.IndexByte(string(out), '\n'))]
	var res stormResult
	if err := json.Unmarshal(line, &res); err != nil {
		b.Fatalf("storm child output %q: %v", out, err)
	}
	return res
}

// stormMain runs the storm when BenchmarkOverhead started this binary as
// its child: it prints its result as its first line of output and exits.
func stormMain() {
	spec := os.Getenv(stormEnv)
	if spec == "" {
		return
	}
	res, err := storm(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	os.Exit(0)
}

// storm opens and closes stormClients x stormConns connections between the
// namespaces spec names (server, client, listen address, connections per
// client, payload, address dialled), and measures itself.
func storm(spec string) (stormResult, error) {
	parts := strings.Split(spec, ",")
	if len(parts) != 6 {
		return stormResult{}, fmt.Errorf("bad storm spec %q", spec)
	}
	stormConns, err := strconv.Atoi(parts[3])
	if err != nil {
		return stormResult{}, fmt.Errorf("bad storm spec %q: %w", spec, err)
	}
	payload, err := strconv.Atoi(parts[4])
	if err != nil {
		return stormResult{}, fmt.Errorf("bad storm spec %q: %w", spec, err)
	}
	server, err := netnstest.Attach(parts[0])
	if err != nil {
		return stormResult{}, err
	}
	defer server.Close()
	client, err := netnstest.Attach(parts[1])
	if err != nil {
		return stormResult{}, err
	}
	defer client.Close()
	target := parts[5]
	l, err := server.Listen(parts[2])
	if err != nil {
		return stormResult{}, err
	}
	defer l.Close()
	var served sync.WaitGroup
	served.Add(stormClients * stormConns)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				if payload > 0 {
					_ = netnstest.Answer(c, payload, payload)
				}
				_, _ = io.Copy(io.Discard, c)
				c.Close()
				served.Done()
			}()
		}
	}()

	before, nodeBefore := cpuTime(), nodeBusy()
	start := time.Now()
	errs := make(chan error, stormClients)
	var wg sync.WaitGroup
	for range stormClients {
		wg.Go(func() {
			errs <- client.Do(func() error {
				for range stormConns {
					c, err := net.Dial("tcp", target)
					if err != nil {
						return err
					}
					if payload > 0 {
						if err := netnstest.Ask(c, payload, payload); err != nil {
							c.Close()
							return err
						}
					}
					c.Close()
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return stormResult{}, err
		}
	}
	served.Wait()
	return stormResult{Conns: stormClients * stormConns, WallNs: time.Since(start).Nanoseconds(), CPUNs: (cpuTime() - before).Nanoseconds(), NodeNs: (nodeBusy() - nodeBefore).Nanoseconds()}, nil
}

// threadCPU is the calling OS thread's CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// nodeBusy is the time all CPUs of the machine spent busy, from the first
// line of /proc/stat: everything but idle and iowait.
func nodeBusy() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	var ticks int64
	for i, f := range strings.Fields(line)[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		v, _ := strconv.ParseInt(f, 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}
