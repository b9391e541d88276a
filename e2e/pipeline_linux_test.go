package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// This package's tests use 10.203.0.0/16.
const testOctet = 203

// TestPipelineExactValues drives real connections between two network
// namespaces through the ocb-built collector and checks the Prometheus
// scrape and the file exporter's output carry the exact values.
func TestPipelineExactValues(t *testing.T) {
	const (
		conns    = 4
		request  = 100000
		response = 5000
		port     = 8080
		closed   = 8081
		dropped  = 8082
	)
	pair := netnstest.NewPair(t, testOctet)
	out := filepath.Join(t.TempDir(), "out.json")
	prom := freePort(t)
	env := map[string]string{
		"TEST_CIDR":        pair.ServerIP.String() + "/24",
		"TEST_OUT":         out,
		"TEST_PROM_PORT":   strconv.Itoa(prom),
		"TEST_HEALTH_PORT": strconv.Itoa(freePort(t)),
	}
	col := startCollector(t, filepath.Join("testdata", "pipeline.yaml"), env)

	srv := netnstest.StartServer(t, pair, port, request, response)
	clientPorts := map[int64]bool{}
	for range conns {
		cp, err := srv.Exchange(context.Background(), pair)
		require.NoError(t, err)
		clientPorts[int64(cp)] = true
	}
	require.NoError(t, netnstest.Refused(context.Background(), pair, closed))
	require.NoError(t, netnstest.TimedOut(t, pair, dropped))

	// Prometheus: wait for the last record (the timed-out connect) to show.
	var exp string
	require.Eventually(t, func() bool {
		var err error
		exp, err = scrape(context.Background(), prom)
		return err == nil && sample(exp, "tcp_connections_failed_total", "error_type=timed_out") == 1 &&
			sample(exp, "tcp_connections_closed_total", "direction=inbound") == conns
	}, 30*time.Second, 200*time.Millisecond, "scrape never showed all connections")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tcp_connections_opened_total", []string{"direction=outbound", "network_type=ipv4"}, conns},
		{"tcp_connections_opened_total", []string{"direction=inbound"}, conns},
		{"tcp_connections_closed_total", []string{"direction=outbound"}, conns},
		{"tcp_connections_closed_total", []string{"direction=inbound"}, conns},
		{"tcp_bytes_sent_total", []string{"direction=outbound"}, conns * request},
		{"tcp_bytes_received_total", []string{"direction=outbound"}, conns * response},
		{"tcp_bytes_sent_total", []string{"direction=inbound"}, conns * response},
		{"tcp_bytes_received_total", []string{"direction=inbound"}, conns * request},
		{"tcp_connections_failed_total", []string{"direction=outbound", "error_type=refused"}, 1},
		{"tcp_connections_failed_total", []string{"direction=outbound", "error_type=timed_out"}, 1},
		{"tcpconn_probe_records_dropped_total", nil, 0},
	} {
		assert.Equal(t, c.want, sample(exp, c.name, c.labels...), "%s%v", c.name, c.labels)
	}

	col.stop(t)
	logs, _ := readFileExport(t, out+".logs")
	_, metrics := readFileExport(t, out+".metrics")

	// Logs: exactly one close record per connection per side, exact bytes.
	closes := map[string]int{}
	failures := map[string]int{}
	for _, lr := range logs {
		a := lr.Attributes()
		get := func(k string) string {
			v, _ := a.Get(k)
			return v.AsString()
		}
		switch lr.EventName() {
		case "tcp.connection.close":
			srcPort, _ := strconv.ParseInt(get("source.port"), 10, 64)
			assert.True(t, clientPorts[srcPort], "close record for unknown client port %d", srcPort)
			assert.Equal(t, pair.ClientIP.String(), get("source.address"))
			assert.Equal(t, pair.ServerIP.String(), get("destination.address"))
			assert.Equal(t, strconv.Itoa(port), get("destination.port"))
			wantSent, wantRecv := request, response
			if get("tcpconn.direction") == "inbound" {
				wantSent, wantRecv = response, request
			}
			assert.Equal(t, strconv.Itoa(wantSent), get("tcp.bytes.sent"))
			assert.Equal(t, strconv.Itoa(wantRecv), get("tcp.bytes.received"))
			assert.Contains(t, lr.Body().Str(), fmt.Sprintf("sent_bytes=%d received_bytes=%d", wantSent, wantRecv))
			closes[get("tcpconn.direction")+"/"+get("source.port")]++
		case "tcp.connection.failure":
			failures[get("error.type")+"/"+get("destination.address")+":"+get("destination.port")]++
			assert.Equal(t, "WARN", lr.SeverityText())
		}
	}
	assert.Len(t, closes, 2*conns)
	for k, n := range closes {
		assert.Equal(t, 1, n, "close records for %s", k)
	}
	assert.Equal(t, map[string]int{
		fmt.Sprintf("refused/%s:%d", pair.ServerIP, closed):     1,
		fmt.Sprintf("timed_out/%s:%d", pair.BlackHole, dropped): 1,
	}, failures)

	// Metrics in the file: the last cumulative value of every series.
	for name, want := range map[string]int64{
		"tcp.connections.opened": 2 * conns,
		"tcp.connections.closed": 2 * conns,
		"tcp.connections.failed": 2,
		"tcp.bytes.sent":         conns * (request + response),
		"tcp.bytes.received":     conns * (request + response),
	} {
		assert.Equal(t, want, metrics[name], name)
	}
}

// readFileExport parses the file exporter's JSON lines: every log record,
// and per metric the sum over series of each series' last value.
func readFileExport(t *testing.T, path string) ([]plog.LogRecord, map[string]int64) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var logs []plog.LogRecord
	last := map[string]map[string]int64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 16<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case strings.Contains(string(line[:min(len(line), 32)]), "resourceLogs"):
			ld, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs(line)
			require.NoError(t, err)
			for i := range ld.ResourceLogs().Len() {
				sls := ld.ResourceLogs().At(i).ScopeLogs()
				for j := range sls.Len() {
					lrs := sls.At(j).LogRecords()
					for k := range lrs.Len() {
						logs = append(logs, lrs.At(k))
					}
				}
			}
		case strings.Contains(string(line[:min(len(line), 32)]), "resourceMetrics"):
			md, err := (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(line)
			require.NoError(t, err)
			rms := md.ResourceMetrics()
			for i := range rms.Len() {
				sms := rms.At(i).ScopeMetrics()
				for j := range sms.Len() {
					ms := sms.At(j).Metrics()
					for k := range ms.Len() {
						m := ms.At(k)
						if m.Type() != pmetric.MetricTypeSum {
							continue
						}
						if last[m.Name()] == nil {
							last[m.Name()] = map[string]int64{}
						}
						dps := m.Sum().DataPoints()
						for d := range dps.Len() {
							last[m.Name()][fmt.Sprint(dps.At(d).Attributes().AsRaw())] = dps.At(d).IntValue()
						}
					}
				}
			}
		}
	}
	require.NoError(t, sc.Err())
	sums := map[string]int64{}
	for name, series := range last {
		for _, v := range series {
			sums[name] += v
		}
	}
	return logs, sums
}
