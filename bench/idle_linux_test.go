package bench

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

var (
	idleFor   = flag.Duration("idle-for", 30*time.Second, "how long BenchmarkCollectorIdle measures each configuration")
	idleConns = flag.Int("idle-conns", 300, "connections BenchmarkCollectorIdle holds open")
	idleBin   = flag.String("idle-bin", filepath.Join("..", "bin", "otelcol-tcpconn"), "the collector BenchmarkCollectorIdle runs (before and after: a copy of an older build)")
)

// BenchmarkCollectorIdle reports the collector's CPU in ms per second of
// wall time on an idle node: a few hundred connections held open between
// two network namespaces, none opening or closing. The collector is
// bin/otelcol-tcpconn with the receiver's defaults (metrics and access
// logs to the file exporter through batch); the sub-benchmarks change one
// thing each, so that the cost of the ring-buffer polls, the report walk,
// the metrics flush and the logs pipeline can be told apart.
//
//	go test ./bench -run '^$' -bench CollectorIdle -benchtime 1x -v
func BenchmarkCollectorIdle(b *testing.B) {
	for _, c := range []struct {
		name  string
		logs  bool
		probe string // more of the receiver's probe block
		extra string // more of the receiver's configuration
	}{
		{name: "default", logs: true},
		{name: "walk=off", logs: true, extra: "    report_interval: 0s\n"},
		{name: "poll=1s", logs: true, probe: ", poll_interval: 1s"},
		{name: "flush=1h", logs: true, extra: "    flush_interval: 1h\n    series_expiry: 0s\n"},
		{name: "logs=off", logs: false},
		{name: "quiet", logs: false, probe: ", poll_interval: 1s", extra: "    report_interval: 0s\n    flush_interval: 1h\n    series_expiry: 0s\n"},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchCollectorIdle(b, 6*time.Second, func(b *testing.B) (*exec.Cmd, string, string) {
				cmd, logPath := idleCollectorCmd(b, c.logs, c.probe, c.extra)
				return cmd, logPath, filepath.Join(filepath.Dir(logPath), "out.json")
			})
		})
	}
	// The agent manifest's pipeline: memory_limiter, OTLP over gRPC
	// (snappy) to a second collector, whose CPU is not counted, with the
	// receiver's default flush_interval (5s); agent: the manifest's
	// flush_interval, 30s (measured after the first flush, so that the
	// records read meanwhile are known); and the otlp pipeline with the
	// batch processors the manifest had (timeout 1s, and the processor's
	// default 200ms): their timers fire every timeout in each pipeline
	// whether or not anything waits.
	for _, c := range []struct {
		name     string
		batch    time.Duration
		receiver string
		warmup   time.Duration
	}{
		{"otlp", 0, "", 6 * time.Second},
		{"agent", 0, "flush_interval: 30s", 31 * time.Second},
		{"otlp-batch=1s", time.Second, "", 6 * time.Second},
		{"otlp-batch=200ms", 200 * time.Millisecond, "", 6 * time.Second},
	} {
		b.Run(c.name, func(b *testing.B) {
			benchCollectorIdle(b, c.warmup, func(b *testing.B) (*exec.Cmd, string, string) {
				sk := startSink(b)
				cmd, logPath := otlpCollectorCmd(b, sk.endpoint, "snappy", c.batch, c.receiver)
				return cmd, logPath, sk.metrics
			})
		})
	}
}

// benchCollectorIdle measures the collector that collector starts: it
// returns the command, where the collector's own output goes and the file
// its metrics reach (JSON lines, tcpconn.probe.records among them).
func benchCollectorIdle(b *testing.B, warmup time.Duration, collector func(*testing.B) (cmd *exec.Cmd, logPath, outPath string)) {
	netnstest.RequireRoot(b)
	pair := netnstest.NewPair(b, 207)
	netnstest.HoldInChildren(b, pair, *idleConns)
	cmd, logPath, outPath := collector(b)
	// The start-up walk and the first flush are not idle: warmup is past
	// the first flush.
	o := startProcess(b, cmd, warmup).(*processObserver)
	recs0 := lastProbeRecords(outPath)
	start := time.Now()
	time.Sleep(*idleFor)
	cpu := procCPU(o.cmd.Process.Pid) - o.cpu0
	wall := time.Since(start)
	recs := lastProbeRecords(outPath) - recs0
	o.stop(b)
	if cpu <= 0 {
		out, _ := os.ReadFile(logPath)
		b.Fatalf("the collector did not run: %s", out)
	}
	msPerS := float64(cpu) / float64(time.Millisecond) / wall.Seconds()
	b.ReportMetric(msPerS, "cpu-ms/s")
	// The probe sees every connection of the node: other work on it makes
	// records, and the node was not idle. Flushed every 5s, so about.
	b.ReportMetric(float64(recs)/wall.Seconds(), "records/s")
	b.Logf("collector CPU %.2f ms/s idle with %d open connections (%v of CPU in %v; about %d records read meanwhile, from the node's other connections)",
		msPerS, *idleConns, cpu.Round(time.Microsecond), wall.Round(time.Millisecond), recs)
}

var probeRecordsRE = regexp.MustCompile(`"name":"tcpconn\.probe\.records".*?"asInt":"(\d+)"`)

// lastProbeRecords is the last tcpconn.probe.records the collector wrote
// to its file (0 before its first flush, or without flushes).
func lastProbeRecords(path string) int64 {
	raw, _ := os.ReadFile(path)
	m := probeRecordsRE.FindAllSubmatch(raw, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(string(m[len(m)-1][1]), 10, 64)
	return n
}

// idleCollectorCmd is collectorCmd with more of the probe block; it also
// returns where the collector's own output goes.
func idleCollectorCmd(b *testing.B, logs bool, probe, extra string) (*exec.Cmd, string) {
	bin, err := filepath.Abs(*idleBin)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		netnstest.Unavailable(b, bin+" (run `make build`)")
	}
	dir := b.TempDir()
	cfg := filepath.Join(dir, "collector.yaml")
	logsPipeline := ""
	if logs {
		logsPipeline = "    logs: {receivers: [tcpconn], processors: [batch], exporters: [file/logs]}\n"
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`receivers:
  tcpconn:
    probe: {lock_file: %s/lock%s}
%sprocessors:
  batch: {}
exporters:
  file: {path: %s/out.json}
  file/logs: {path: %s/out.json.logs}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    metrics: {receivers: [tcpconn], processors: [batch], exporters: [file]}
%s`, dir, probe, extra, dir, dir, logsPipeline)), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	return cmd, logTo(b, cmd)
}
