package bench

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// sink is a second collector on loopback that takes OTLP over gRPC and
// only counts it (the debug exporter's basic line per batch): where the
// collector-otlp mode sends what it observes, as an agent sends to its
// gateway.
type sink struct {
	endpoint string
	out      string
	// metrics is the file the metrics it received are written to (JSON
	// lines), the receiver's own counters among them.
	metrics string
	read    int // bytes of out already counted
	// metricsRead: bytes of metrics already read by counters.
	metricsRead int
}

// startSink starts the second collector, stopped when the benchmark ends.
func startSink(b *testing.B) *sink {
	bin := collectorBin(b)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	endpoint := l.Addr().String()
	l.Close()
	dir := b.TempDir()
	cfg := filepath.Join(dir, "sink.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc: {endpoint: %q, max_recv_msg_size_mib: 16}
exporters:
  debug: {verbosity: basic}
  file: {path: %q}
service:
  # Every debug line counts: no sampling of the collector's own logs (by
  # default only the first 10 of a message in 10 s, then every 100th).
  telemetry: {metrics: {level: none}, logs: {sampling: {enabled: false}}}
  pipelines:
    metrics: {receivers: [otlp], exporters: [debug, file]}
    logs: {receivers: [otlp], exporters: [debug]}
`, endpoint, filepath.Join(dir, "metrics.json"))), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfg)
	s := &sink{endpoint: endpoint, out: logTo(b, cmd), metrics: filepath.Join(dir, "metrics.json")}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", endpoint); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(s.out)
			b.Fatalf("the second collector does not listen on %s: %s", endpoint, raw)
		}
	}
}

var (
	sinkLogRecords = regexp.MustCompile(`"log records": (\d+)`)
	sinkDataPoints = regexp.MustCompile(`"data points": (\d+)`)
)

// delivered counts the log records and metric points the sink received
// since the last call.
func (s *sink) delivered(b *testing.B) (logs, points int) {
	raw, err := os.ReadFile(s.out)
	if err != nil {
		b.Fatal(err)
	}
	fresh := raw[min(s.read, len(raw)):]
	s.read = len(raw)
	sum := func(re *regexp.Regexp) (n int) {
		for _, m := range re.FindAllSubmatch(fresh, -1) {
			v, _ := strconv.Atoi(string(m[1]))
			n += v
		}
		return n
	}
	if i := bytes.Index(fresh, []byte("\terror\t")); i >= 0 {
		line, _, _ := bytes.Cut(fresh[i:], []byte("\n"))
		b.Logf("the second collector logged an error: %s", line)
	}
	return sum(sinkLogRecords), sum(sinkDataPoints)
}

// otlpCollectorCmd runs bin/otelcol-tcpconn as the agent manifest
// configures it (deploy/agent/agent.yaml: memory_limiter, the receiver's
// access-log batches of 2048 records, OTLP over gRPC), exporting metrics
// and access logs to endpoint with compression (empty: the exporter's
// default, gzip). A batchTimeout puts the batch processors back as the
// manifest had them (batch, and batch/logs of 2048 records, with that
// timeout; the processor's default is 200ms); 0 leaves them out.
// receiver lines are more of the receiver's configuration. It returns the
// command and the file the collector's own output goes to.
func otlpCollectorCmd(b *testing.B, endpoint, compression string, batchTimeout time.Duration, receiver ...string) (*exec.Cmd, string) {
	if compression != "" {
		compression = fmt.Sprintf("\n    compression: %s", compression)
	}
	metricsProcs, logsProcs, batch, receiverCfg := "[memory_limiter]", "[memory_limiter]", "", "\n    logs: {max_batch_size: 2048}"
	if batchTimeout > 0 {
		metricsProcs, logsProcs, receiverCfg = "[memory_limiter, batch]", "[memory_limiter, batch/logs]", ""
		batch = fmt.Sprintf("  batch: {timeout: %v}\n  batch/logs: {send_batch_size: 2048, send_batch_max_size: 2048, timeout: %v}\n", batchTimeout, batchTimeout)
	}
	for _, line := range receiver {
		receiverCfg += "\n    " + line
	}
	dir := b.TempDir()
	cfg := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`receivers:
  tcpconn:
    probe: {lock_file: %s/lock}%s
processors:
  memory_limiter: {check_interval: 1s, limit_percentage: 80, spike_limit_percentage: 20}
%sexporters:
  otlp_grpc:
    endpoint: %q
    tls: {insecure: true}
    sending_queue: {num_consumers: 1} # in order, as the manifest's load_balancing%s
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    metrics: {receivers: [tcpconn], processors: %s, exporters: [otlp_grpc]}
    logs: {receivers: [tcpconn], processors: %s, exporters: [otlp_grpc]}
`, dir, receiverCfg, batch, endpoint, compression, metricsProcs, logsProcs)), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(collectorBin(b), "--config", cfg)
	return cmd, logTo(b, cmd)
}

// logTo sends cmd's output to a file of the benchmark's, closed when it
// ends, and returns the file's path.
func logTo(b *testing.B, cmd *exec.Cmd) string {
	f, err := os.Create(filepath.Join(b.TempDir(), "collector.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	cmd.Stdout, cmd.Stderr = f, f
	return f.Name()
}

// counters gives the largest value each named Sum metric took in the
// metrics received since the last call: the receiver's own counters of the
// collector that last exported (they are cumulative from its start).
func (s *sink) counters(b *testing.B, names ...string) []int64 {
	raw, err := os.ReadFile(s.metrics)
	if err != nil {
		b.Fatal(err)
	}
	fresh := raw[min(s.metricsRead, len(raw)):]
	s.metricsRead = len(raw)
	v := make([]int64, len(names))
	for i, name := range names {
		v[i] = largestSum(fresh, name)
	}
	return v
}
