package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// Istio's TCP label set, which the istio profile and the kmesh service
// view must expose exactly.
var istioLabels = []string{
	"connection_security_policy", "destination_app", "destination_canonical_revision", "destination_canonical_service",
	"destination_cluster", "destination_principal", "destination_service", "destination_service_name",
	"destination_service_namespace", "destination_version", "destination_workload", "destination_workload_namespace",
	"reporter", "request_protocol", "response_flags", "source_app", "source_canonical_revision", "source_canonical_service",
	"source_cluster", "source_principal", "source_version", "source_workload", "source_workload_namespace",
}

// Kmesh's workload label set.
var kmeshWorkloadLabels = []string{
	"connection_security_policy", "destination_app", "destination_canonical_revision", "destination_canonical_service",
	"destination_cluster", "destination_pod_address", "destination_pod_name", "destination_pod_namespace",
	"destination_principal", "destination_version", "destination_workload", "destination_workload_namespace",
	"reporter", "request_protocol", "response_flags", "source_app", "source_canonical_revision", "source_canonical_service",
	"source_cluster", "source_principal", "source_version", "source_workload", "source_workload_namespace",
}

// TestPrometheusProfiles runs real traffic between two "pods" through the
// collector in the istio and kmesh profiles while a real Prometheus server
// scrapes it, and asks Prometheus the questions Istio dashboards and Kiali
// ask.
func TestPrometheusProfiles(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		netnstest.Unavailable(t, "the prometheus server (Debian package prometheus)")
	}
	for _, profile := range []string{"istio", "kmesh"} {
		t.Run(profile, func(t *testing.T) { testProfile(t, promBin, profile) })
	}
}

func testProfile(t *testing.T, promBin, profile string) {
	const (
		conns    = 3
		request  = 100000
		response = 5000
		port     = 8080
	)
	pair := netnstest.NewPair(t, testOctet)
	kubeconfig := startShop(t, pair, port)
	dir := t.TempDir()
	exporterPort := freePort(t)
	col := startCollector(t, filepath.Join("testdata", "profile.yaml"), map[string]string{
		"TEST_PROFILE": profile, "TEST_CIDR": pair.ServerIP.String() + "/24", "TEST_PROM_PORT": strconv.Itoa(exporterPort),
		"TEST_HEALTH_PORT": strconv.Itoa(freePort(t)), "KUBECONFIG": kubeconfig,
	})
	require.Eventually(t, func() bool { return strings.Contains(col.output(), "Kubernetes identity synchronised") },
		30*time.Second, 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	prom := startPrometheus(t, promBin, dir, exporterPort)

	srv := netnstest.StartServer(t, pair, port, request, response)
	for range conns {
		_, err := srv.Exchange(context.Background(), pair)
		require.NoError(t, err)
	}

	m := profile + "_tcp_"
	byWorkloadService := " by (source_workload, destination_service)"
	want := map[string]string{"source_workload": "frontend", "destination_service": "checkout.shop.svc.cluster.local"}
	// Exact totals, once Prometheus has scraped them.
	for query, value := range map[string]float64{
		"sum(" + m + `received_bytes_total{reporter="destination"})` + byWorkloadService:     conns * request,
		"sum(" + m + `sent_bytes_total{reporter="destination"})` + byWorkloadService:         conns * response,
		"sum(" + m + `connections_opened_total{reporter="destination"})` + byWorkloadService: conns,
		"sum(" + m + `connections_closed_total{reporter="destination"})` + byWorkloadService: conns,
		"sum(" + m + `connections_opened_total{reporter="source"})` + byWorkloadService:      conns,
		// ztunnel's swap: on reporter="source", sent is what the destination sent.
		"sum(" + m + `sent_bytes_total{reporter="source"})` + byWorkloadService: conns * response,
	} {
		var got []promSample
		require.Eventually(t, func() bool {
			got = prom.query(t, query)
			return len(got) == 1 && got[0].value == value
		}, 60*time.Second, 500*time.Millisecond, "%s: got %+v, want %v", query, got, value)
		assert.Equal(t, want, got[0].labels, query)
	}
	// Label for label: the scrape of the exporter itself.
	scraped, err := scrape(context.Background(), exporterPort)
	require.NoError(t, err)
	assert.Equal(t, istioLabels, labelNames(t, scraped, m+"connections_opened_total"))
	if profile == "kmesh" {
		assert.Equal(t, kmeshWorkloadLabels, labelNames(t, scraped, "kmesh_tcp_workload_connections_opened_total"))
		var got []promSample
		require.Eventually(t, func() bool {
			got = prom.query(t, `sum(kmesh_tcp_workload_received_bytes_total{reporter="destination"}) by (source_workload, destination_pod_name, destination_pod_address)`)
			return len(got) == 1 && got[0].value == conns*request
		}, 30*time.Second, 500*time.Millisecond, "kmesh workload bytes: %+v", got)
		assert.Equal(t, map[string]string{"source_workload": "frontend", "destination_pod_name": "checkout-5d8f-xyz12",
			"destination_pod_address": pair.ServerIP.String()}, got[0].labels)
	}

	// The rate queries of Istio's dashboards and Kiali's graph, while
	// traffic keeps flowing (a counter that stopped has no rate).
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	flowing := make(chan struct{})
	go func() {
		defer close(flowing)
		for ctx.Err() == nil {
			_, _ = srv.Exchange(context.Background(), pair) // never cut short: the server checks every request
			time.Sleep(200 * time.Millisecond)
		}
	}()
	defer func() { stop(); <-flowing }()
	for _, query := range []string{
		"sum(rate(" + m + `sent_bytes_total{reporter="destination"}[1m]))` + byWorkloadService,
		"sum(rate(" + m + `received_bytes_total{reporter="destination"}[1m]))` + byWorkloadService,
		"sum(rate(" + m + `connections_opened_total{reporter="destination"}[1m]))` + byWorkloadService,
		"sum(rate(" + m + `connections_closed_total{reporter="destination"}[1m]))` + byWorkloadService,
	} {
		var got []promSample
		require.Eventually(t, func() bool {
			got = prom.query(t, query)
			return len(got) == 1 && got[0].value > 0
		}, 30*time.Second, 500*time.Millisecond, "%s: got %+v", query, got)
		assert.Equal(t, want, got[0].labels, query)
	}
}

// labelNames returns the sorted label names of the first series of a
// metric in a Prometheus exposition.
func labelNames(t *testing.T, exposition, name string) []string {
	t.Helper()
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		body := line[len(name)+1 : strings.LastIndexByte(line, '}')]
		var names []string
		for _, kv := range strings.Split(body, "\",") {
			k, _, _ := strings.Cut(kv, "=")
			names = append(names, strings.TrimPrefix(k, ","))
		}
		slices.Sort(names)
		return names
	}
	t.Fatalf("%s not in the scrape", name)
	return nil
}

type promServer struct {
	base string
	port int
}

type promSample struct {
	labels map[string]string
	value  float64
}

// startPrometheus runs a Prometheus server on loopback scraping the
// collector's exporter every second.
func startPrometheus(t *testing.T, bin, dir string, target int) *promServer {
	t.Helper()
	return runPrometheus(t, bin, dir, fmt.Sprintf(`scrape_configs:
  - job_name: otelcol-tcpconn
    static_configs:
      - targets: ["127.0.0.1:%d"]
`, target))
}

// startRemoteWritePrometheus runs a Prometheus server that scrapes nothing
// and takes samples by remote write (/api/v1/write).
func startRemoteWritePrometheus(t *testing.T, bin, dir string) *promServer {
	t.Helper()
	return runPrometheus(t, bin, dir, "", "--web.enable-remote-write-receiver")
}

// runPrometheus runs a Prometheus server on loopback with the given
// scrape configuration (YAML) and flags, and waits until it is ready.
func runPrometheus(t *testing.T, bin, dir, scrapeConfigs string, flags ...string) *promServer {
	t.Helper()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"+scrapeConfigs), 0o644))
	port := freePort(t)
	args := append([]string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn"}, flags...)
	cmd := exec.Command(bin, args...)
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	p := &promServer{base: fmt.Sprintf("http://127.0.0.1:%d", port), port: port}
	require.Eventually(t, func() bool {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "prometheus not ready")
	return p
}

// query runs an instant PromQL query now.
func (p *promServer) query(t *testing.T, q string) []promSample {
	t.Helper()
	return p.queryAt(t, q, time.Time{})
}

// queryAt runs an instant PromQL query at a given time (zero: now).
func (p *promServer) queryAt(t *testing.T, q string, at time.Time) []promSample {
	t.Helper()
	u := p.base + "/api/v1/query?query=" + url.QueryEscape(q)
	if !at.IsZero() {
		u += fmt.Sprintf("&time=%.3f", float64(at.UnixMilli())/1000)
	}
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, "%s: %s", q, body.Error)
	var out []promSample
	for _, r := range body.Data.Result {
		v, err := strconv.ParseFloat(r.Value[1].(string), 64)
		require.NoError(t, err)
		out = append(out, promSample{labels: r.Metric, value: v})
	}
	return out
}
