package bench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

var (
	gatewayRate     = flag.Int("gateway.rate", 10000, "records or data points per second sent to the gateway")
	gatewayDuration = flag.Duration("gateway.duration", 15*time.Second, "how long the load runs")
)

// BenchmarkGateway measures one gateway collector (deploy/gateway's
// pipeline: OTLP in; access logs out over OTLP, metrics by remote write to
// a real Prometheus) under a load generator of our own on loopback: real
// access-log records and data points (the receiver's golden files) at
// -gateway.rate per second. It reports the gateway's CPU and RSS; the
// sink's and Prometheus's CPU are not counted. For docs/scale.md:
//
//	go test ./bench -run '^$' -bench Gateway -benchtime 1x -v
func BenchmarkGateway(b *testing.B) {
	bin, err := filepath.Abs(filepath.Join("..", "bin", "otelcol-tcpconn"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		netnstest.Unavailable(b, "bin/otelcol-tcpconn (run `make build`)")
	}
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		netnstest.Unavailable(b, "the prometheus server (Debian package prometheus)")
	}
	dir := b.TempDir()
	promPort := port(b)
	promCmd := exec.Command(prom, "--config.file=/dev/null", "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", promPort), "--web.enable-remote-write-receiver", "--log.level=warn")
	run(b, promCmd, fmt.Sprintf("http://127.0.0.1:%d/-/ready", promPort))

	sinkPort, sinkHealth := port(b), port(b)
	sink := exec.Command(bin, "--config", writeConfig(b, dir, "sink.yaml", fmt.Sprintf(`receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:%d"}}}
exporters:
  debug: {verbosity: basic, sampling_initial: 1, sampling_thereafter: 1000}
extensions:
  health_check: {endpoint: "127.0.0.1:%d"}
service:
  extensions: [health_check]
  telemetry: {metrics: {level: none}, logs: {level: warn}}
  pipelines:
    logs: {receivers: [otlp], exporters: [debug]}
`, sinkPort, sinkHealth)))
	run(b, sink, fmt.Sprintf("http://127.0.0.1:%d/", sinkHealth))

	gwPort, gwHealth := port(b), port(b)
	gw := exec.Command(bin, "--config", filepath.Join("..", "deploy", "gateway", "gateway.yaml"))
	gw.Env = append(os.Environ(), fmt.Sprintf("REMOTE_WRITE_ENDPOINT=http://127.0.0.1:%d/api/v1/write", promPort),
		fmt.Sprintf("LOGS_ENDPOINT=127.0.0.1:%d", sinkPort))
	// The shipped configuration listens on 0.0.0.0:4317 and :13133 and
	// queues under /var/lib: point it at loopback ports and a temp dir.
	gw.Args = append(gw.Args,
		"--set", fmt.Sprintf("receivers::otlp::protocols::grpc::endpoint=127.0.0.1:%d", gwPort),
		"--set", fmt.Sprintf("extensions::health_check::endpoint=127.0.0.1:%d", gwHealth),
		"--set", "extensions::file_storage/queue::directory="+filepath.Join(dir, "queue"),
		"--set", "exporters::otlp_grpc/logs::tls::insecure=true",
		"--set", "service::telemetry::metrics::level=none")
	run(b, gw, fmt.Sprintf("http://127.0.0.1:%d/", gwHealth))

	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", gwPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()

	logs, err := golden.ReadLogs(filepath.Join("..", "tcpconnreceiver", "testdata", "golden", "logs_identity.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	metrics, err := golden.ReadMetrics(filepath.Join("..", "tcpconnreceiver", "testdata", "golden", "metrics_identity.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	logClient, metricClient := plogotlp.NewGRPCClient(conn), pmetricotlp.NewGRPCClient(conn)
	for _, load := range []struct {
		name string
		send func(ctx context.Context, n int, round int) error
	}{
		{"logs", func(ctx context.Context, n, _ int) error {
			_, err := logClient.Export(ctx, plogotlp.NewExportRequestFromLogs(logBatch(logs, n)))
			return err
		}},
		{"metrics", func(ctx context.Context, n, round int) error {
			_, err := metricClient.Export(ctx, pmetricotlp.NewExportRequestFromMetrics(metricBatch(metrics, n, round)))
			return err
		}},
	} {
		b.Run(load.name, func(b *testing.B) {
			for b.Loop() {
				pid := gw.Process.Pid
				cpu0, start := procCPU(pid), time.Now()
				const tick = 100 * time.Millisecond
				perTick := *gatewayRate / int(time.Second/tick)
				sent, round := 0, 0
				for next := start; time.Since(start) < *gatewayDuration; next = next.Add(tick) {
					time.Sleep(time.Until(next))
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					if err := load.send(ctx, perTick, round); err != nil {
						b.Fatalf("export to the gateway: %v", err)
					}
					cancel()
					sent += perTick
					round++
				}
				elapsed, cpu := time.Since(start), procCPU(pid)-cpu0
				b.ReportMetric(float64(sent)/elapsed.Seconds(), "items/s")
				b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "gateway-cores")
				b.ReportMetric(float64(cpu.Microseconds())/float64(sent), "gateway-µs/item")
				b.ReportMetric(float64(rss(b, pid))/(1<<20), "gateway-RSS-MiB")
			}
		})
	}
}

// logBatch is n access-log records taken in turn from the golden ones,
// with fresh timestamps.
func logBatch(src plog.Logs, n int) plog.Logs {
	out := plog.NewLogs()
	src.ResourceLogs().At(0).Resource().CopyTo(out.ResourceLogs().AppendEmpty().Resource())
	sl := out.ResourceLogs().At(0).ScopeLogs().AppendEmpty()
	from := src.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	now := pcommon.NewTimestampFromTime(time.Now())
	for i := range n {
		lr := sl.LogRecords().AppendEmpty()
		from.At(i % from.Len()).CopyTo(lr)
		lr.SetTimestamp(now)
	}
	return out
}

// metricBatch is about n data points: copies of the golden metrics, each
// copy on a Resource of its own node (a distinct series per copy and
// round-robin over 1000 nodes), stamped now.
func metricBatch(src pmetric.Metrics, n, round int) pmetric.Metrics {
	out := pmetric.NewMetrics()
	per := max(src.DataPointCount(), 1)
	now := pcommon.NewTimestampFromTime(time.Now())
	for c := 0; c*per < n; c++ {
		node := fmt.Sprintf("node-%d", (round*(n/per+1)+c)%1000)
		for i := range src.ResourceMetrics().Len() {
			rm := out.ResourceMetrics().AppendEmpty()
			src.ResourceMetrics().At(i).CopyTo(rm)
			rm.Resource().Attributes().PutStr("k8s.node.name", node)
			stamp(rm, now)
		}
	}
	return out
}

func stamp(rm pmetric.ResourceMetrics, now pcommon.Timestamp) {
	for j := range rm.ScopeMetrics().Len() {
		ms := rm.ScopeMetrics().At(j).Metrics()
		for k := range ms.Len() {
			m := ms.At(k)
			switch m.Type() {
			case pmetric.MetricTypeSum:
				for d := range m.Sum().DataPoints().Len() {
					m.Sum().DataPoints().At(d).SetTimestamp(now)
				}
			case pmetric.MetricTypeGauge:
				for d := range m.Gauge().DataPoints().Len() {
					m.Gauge().DataPoints().At(d).SetTimestamp(now)
				}
			case pmetric.MetricTypeHistogram:
				for d := range m.Histogram().DataPoints().Len() {
					m.Histogram().DataPoints().At(d).SetTimestamp(now)
				}
			}
		}
	}
}

func port(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeConfig(b *testing.B, dir, name, body string) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// run starts cmd, stops it at cleanup, and waits until ready answers 200.
func run(b *testing.B, cmd *exec.Cmd, ready string) {
	b.Helper()
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", cmd.Path, err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	b.Fatalf("%s not ready at %s", cmd.Path, ready)
}
