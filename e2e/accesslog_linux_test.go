package e2e

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestPipelineAccessLogsOverOTLP sends access logs through the agent's
// filters and sampling to a file and, over OTLP, to a second collector.
// Big connections pass the min_bytes filter and are sampled at 0.5, tiny
// ones are filtered, failures always pass; every dropped record is counted
// by reason, and the gateway receives exactly what the agent kept.
func TestPipelineAccessLogsOverOTLP(t *testing.T) {
	const big, tiny = 4, 3
	pair := netnstest.NewPair(t, testOctet)
	dir := t.TempDir()
	otlpPort, prom := freePort(t), freePort(t)
	gateway := startCollector(t, filepath.Join("testdata", "gateway.yaml"), map[string]string{
		"TEST_OTLP_PORT": strconv.Itoa(otlpPort), "TEST_OUT": filepath.Join(dir, "gateway.json"),
		"TEST_HEALTH_PORT": strconv.Itoa(freePort(t)),
	})
	agent := startCollector(t, filepath.Join("testdata", "agent.yaml"), map[string]string{
		"TEST_CIDR": pair.ServerIP.String() + "/24", "TEST_OUT": filepath.Join(dir, "agent.json"),
		"TEST_OTLP_PORT": strconv.Itoa(otlpPort), "TEST_PROM_PORT": strconv.Itoa(prom),
		"TEST_HEALTH_PORT": strconv.Itoa(freePort(t)),
	})

	ctx := context.Background()
	bigSrv := netnstest.StartServer(t, pair, 8080, 100000, 5000)
	tinySrv := netnstest.StartServer(t, pair, 8090, 10, 10)
	for range big {
		_, err := bigSrv.Exchange(ctx, pair)
		require.NoError(t, err)
	}
	for range tiny {
		_, err := tinySrv.Exchange(ctx, pair)
		require.NoError(t, err)
	}
	require.NoError(t, netnstest.Refused(ctx, pair, 8081))
	require.NoError(t, netnstest.TimedOut(t, pair, 8082))

	var exp string
	require.Eventually(t, func() bool {
		var err error
		exp, err = scrape(ctx, prom)
		return err == nil && sample(exp, "tcp_connections_failed_total", "error_type=timed_out") == 1 &&
			sample(exp, "tcp_connections_closed_total", "direction=inbound") == big+tiny
	}, 30*time.Second, 100*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // the last log batches
	agent.stop(t)
	gateway.stop(t)

	local, _ := readFileExport(t, filepath.Join(dir, "agent.json"))
	remote, _ := readFileExport(t, filepath.Join(dir, "gateway.json"))
	kept := map[string]int{}
	ids := map[int64]bool{}
	for _, lr := range local {
		a := lr.Attributes().AsRaw()
		kept[lr.EventName()]++
		ids[a["tcpconn.connection.id"].(int64)] = true
		if lr.EventName() == "tcp.connection.close" {
			assert.GreaterOrEqual(t, a["tcp.bytes.sent"].(int64)+a["tcp.bytes.received"].(int64), int64(1000), "min_bytes")
		}
	}
	assert.Equal(t, 2, kept["tcp.connection.failure"], "failures are never filtered or sampled")
	sampled := sample(exp, "tcpconn_logs_filtered_total", "reason=sampling")
	assert.Equal(t, float64(2*tiny), sample(exp, "tcpconn_logs_filtered_total", "reason=min_bytes"), "both ends of each tiny connection")
	assert.Equal(t, float64(2*big), float64(kept["tcp.connection.close"])+sampled, "kept + sampled out = every big close record")
	t.Logf("sampling 0.5 kept %d of %d big close records", kept["tcp.connection.close"], 2*big)

	require.Len(t, remote, len(local), "the gateway receives exactly what the agent kept")
	for _, lr := range remote {
		id, _ := lr.Attributes().Get("tcpconn.connection.id")
		assert.True(t, ids[id.Int()], "record for connection %d not kept by the agent", id.Int())
	}
}
