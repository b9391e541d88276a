package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// gateway is one gateway collector of the fleet test and what it needs to
// start again on the same ports.
type gateway struct {
	*collector
	env map[string]string
}

func startGateway(t *testing.T, promPort int) *gateway {
	t.Helper()
	env := map[string]string{
		"TEST_OTLP_PORT": strconv.Itoa(freePort(t)), "TEST_PROM_PORT": strconv.Itoa(promPort),
		"TEST_HEALTH_PORT": strconv.Itoa(freePort(t)), "TEST_TELEMETRY_PORT": strconv.Itoa(freePort(t)),
	}
	return &gateway{collector: startCollector(t, filepath.Join("testdata", "fleet-gateway.yaml"), env), env: env}
}

// accepted is how many metric points the gateway's OTLP receiver took.
func (g *gateway) accepted(t *testing.T) float64 {
	t.Helper()
	port, _ := strconv.Atoi(g.env["TEST_TELEMETRY_PORT"])
	text, err := scrape(context.Background(), port)
	require.NoError(t, err)
	var n float64
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "otelcol_receiver_accepted_metric_points") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			require.NoError(t, err, line)
			n += v
		}
	}
	return n
}

// TestFleetExactThroughGateways runs the fleet's data path with real
// components: one agent (the probe, known traffic between two network
// namespaces) -> load_balancing exporter (static resolver, routed by
// Resource, persistent queue) -> two gateway collectors -> a real
// Prometheus by remote write. The totals Prometheus holds equal the
// traffic exactly; then the gateway that carries the series is stopped
// while traffic goes on and started again: nothing is lost and nothing is
// counted twice. Delivery is at least once (the agent's queue retries
// until the gateway answers) and the metrics are cumulative, so a sample
// delivered twice carries the same total: exact, not merely eventually
// larger.
func TestFleetExactThroughGateways(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		netnstest.Unavailable(t, "the prometheus server (Debian package prometheus)")
	}
	const (
		conns    = 3
		request  = 100000
		response = 5000
		port     = 8080
	)
	pair := netnstest.NewPair(t, testOctet)
	kubeconfig := startShop(t, pair, port)
	prom := startRemoteWritePrometheus(t, promBin, t.TempDir())
	gws := []*gateway{startGateway(t, prom.port), startGateway(t, prom.port)}
	agent := startCollector(t, filepath.Join("testdata", "fleet-agent.yaml"), map[string]string{
		"TEST_CIDR": pair.ServerIP.String() + "/24", "TEST_HEALTH_PORT": strconv.Itoa(freePort(t)),
		"TEST_GW1_PORT": gws[0].env["TEST_OTLP_PORT"], "TEST_GW2_PORT": gws[1].env["TEST_OTLP_PORT"],
		"TEST_QUEUE_DIR": t.TempDir(), "KUBECONFIG": kubeconfig,
	})
	require.Eventually(t, func() bool { return strings.Contains(agent.output(), "Kubernetes identity synchronised") },
		30*time.Second, 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)

	srv := netnstest.StartServer(t, pair, port, request, response)
	exchange := func(n int) {
		for range n {
			_, err := srv.Exchange(context.Background(), pair)
			require.NoError(t, err)
		}
	}
	// Both ends are on this node: the server pod's series (inbound) and the
	// client pod's (outbound), each on its own Resource.
	totals := func(n float64) map[string]float64 {
		return map[string]float64{
			`sum(tcp_bytes_received_total{direction="inbound",k8s_pod_name="checkout-5d8f-xyz12",peer_workload="frontend"})`: n * request,
			`sum(tcp_bytes_sent_total{direction="inbound",k8s_pod_name="checkout-5d8f-xyz12",peer_workload="frontend"})`:     n * response,
			`sum(tcp_bytes_sent_total{direction="outbound",k8s_pod_name="frontend-7c9d5-abcde",peer_workload="checkout"})`:   n * request,
			`sum(tcp_connections_opened_total{direction="inbound",k8s_pod_name="checkout-5d8f-xyz12"})`:                      n,
			`sum(tcp_connections_closed_total{direction="outbound",k8s_pod_name="frontend-7c9d5-abcde"})`:                    n,
		}
	}
	waitTotals := func(n float64) {
		t.Helper()
		for query, want := range totals(n) {
			var got []promSample
			require.Eventually(t, func() bool {
				got = prom.query(t, query)
				return len(got) == 1 && got[0].value == want
			}, 60*time.Second, 250*time.Millisecond, "%s: got %+v, want %v; series: %v", query, got, want, metricNames(t, prom))
		}
	}

	exchange(conns)
	waitTotals(conns)
	require.Positive(t, gws[0].accepted(t)+gws[1].accepted(t))

	// Stop a gateway that carries series, while traffic goes on.
	busy := gws[0]
	if busy.accepted(t) == 0 {
		busy = gws[1]
	}
	busy.stop(t)
	down := time.Now()
	exchange(conns)
	time.Sleep(3 * time.Second) // several flushes wait in the agent's queue
	up := time.Now()
	startCollector(t, filepath.Join("testdata", "fleet-gateway.yaml"), busy.env)
	waitTotals(2 * conns)
	// Nothing lost: every flush made while the gateway was away reaches
	// Prometheus once it is back (a flush every 500ms; the agent's gRPC
	// connection takes a few seconds of reconnect back-off to notice), so
	// both pods' series have no gap there. Without the queue the totals
	// would still end right (the counters are cumulative), but these
	// samples would be missing.
	window := fmt.Sprintf("[%dms]", up.Sub(down).Milliseconds())
	flushes := float64(up.Sub(down) / (500 * time.Millisecond))
	for pod, peer := range map[string]string{"checkout-5d8f-xyz12": "frontend", "frontend-7c9d5-abcde": "checkout"} {
		// The series that existed before the stop (a connection whose peer
		// was not resolved yet would start one of its own).
		sel := `tcp_connections_opened_total{k8s_pod_name="` + pod + `",peer_workload="` + peer + `"}`
		q := `count_over_time(` + sel + window + `)`
		var got []promSample
		require.Eventually(t, func() bool {
			got = prom.queryAt(t, q, up)
			return len(got) == 1 && got[0].value >= flushes-2
		}, 30*time.Second, 250*time.Millisecond, "%s: samples while the gateway was away (%v to %v): %+v; %s", q, down, up, got,
			rawSamples(t, prom, sel+"[1m]"))
	}
	// And they stay exact: no late duplicate adds to them.
	time.Sleep(2 * time.Second)
	for query, want := range totals(2 * conns) {
		got := prom.query(t, query)
		require.Len(t, got, 1, query)
		assert.Equal(t, want, got[0].value, query)
	}
}

// metricNames lists the metric names Prometheus holds, for failure messages.
func metricNames(t *testing.T, p *promServer) string {
	t.Helper()
	var names []string
	for _, s := range p.query(t, `count by (__name__) ({__name__=~".+"})`) {
		names = append(names, fmt.Sprintf("%s=%v", s.labels["__name__"], s.value))
	}
	return strings.Join(names, " ")
}

// rawSamples returns the samples of a range selector, for failure messages.
func rawSamples(t *testing.T, p *promServer, sel string) string {
	t.Helper()
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(sel))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
