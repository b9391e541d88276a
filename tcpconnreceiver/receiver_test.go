package tcpconnreceiver

import (
	"flag"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/plogtest"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/identity"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestGoldenMetricsAndLogs(t *testing.T) {
	t.Run("address only", func(t *testing.T) { testGolden(t, "", nil) })
	t.Run("with identities", func(t *testing.T) { testGolden(t, "_identity", fixedResolver()) })
}

func testGolden(t *testing.T, suffix string, resolver identity.Resolver) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour // only the final flush at shutdown
	cfg.Logs.Open = true
	cfg.Logs.Update = true
	cfg.Filter.IncludeCIDRs = []string{"10.1.0.0/16", "fd00::/8"}
	cfg.Filter.ExcludeCIDRs = []string{"10.1.0.99/32"}
	var p *pipelines
	if resolver != nil {
		p = startScripted(t, cfg, resolver)
	} else {
		p = startScripted(t, cfg)
	}
	p.src.push(fixedRecords()...)
	loopback := fixedRecords()[2]
	loopback.LocalAddr, loopback.PeerAddr = netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1")
	excluded := fixedRecords()[2]
	excluded.PeerAddr = netip.MustParseAddr("10.1.0.99")
	p.src.push(loopback, excluded)
	p.src.stats.Dropped = 3
	p.src.stats.NoState = 1
	p.src.stats.Missed = 2
	p.src.stats.Untracked, p.src.stats.Stale = 4, 5
	p.shutdown(t)

	require.Len(t, p.metrics.AllMetrics(), 1, "one flush, at shutdown")
	gotMetrics := p.metrics.AllMetrics()[0]
	gotLogs := mergeLogs(p.logs.AllLogs())

	metricsFile := filepath.Join("testdata", "golden", "metrics"+suffix+".yaml")
	logsFile := filepath.Join("testdata", "golden", "logs"+suffix+".yaml")
	if *update {
		require.NoError(t, golden.WriteMetrics(t, metricsFile, gotMetrics))
		require.NoError(t, golden.WriteLogs(t, logsFile, gotLogs))
	}
	wantMetrics, err := golden.ReadMetrics(metricsFile)
	require.NoError(t, err)
	require.NoError(t, pmetrictest.CompareMetrics(wantMetrics, gotMetrics,
		pmetrictest.IgnoreTimestamp(), pmetrictest.IgnoreStartTimestamp(),
		pmetrictest.IgnoreResourceAttributeValue("host.name"),
		pmetrictest.IgnoreResourceMetricsOrder(), pmetrictest.IgnoreMetricsOrder(), pmetrictest.IgnoreMetricDataPointsOrder()))

	assert.Equal(t, int64(2), findSum(t, gotMetrics, "tcpconn.records.filtered"))

	wantLogs, err := golden.ReadLogs(logsFile)
	require.NoError(t, err)
	require.NoError(t, plogtest.CompareLogs(wantLogs, gotLogs,
		plogtest.IgnoreObservedTimestamp(),
		plogtest.IgnoreResourceAttributeValue("host.name")))
}

// mergeLogs puts every batch's records under one resource, in order.
func mergeLogs(batches []plog.Logs) plog.Logs {
	out := plog.NewLogs()
	for _, ld := range batches {
		ld.ResourceLogs().MoveAndAppendTo(out.ResourceLogs())
	}
	if out.ResourceLogs().Len() <= 1 {
		return out
	}
	first := out.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
	for i := 1; i < out.ResourceLogs().Len(); i++ {
		out.ResourceLogs().At(i).ScopeLogs().At(0).LogRecords().MoveAndAppendTo(first)
	}
	out.ResourceLogs().RemoveIf(func(rl plog.ResourceLogs) bool { return rl.ScopeLogs().At(0).LogRecords().Len() == 0 })
	return out
}

func TestLogKindsFollowConfig(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	p := startScripted(t, cfg) // defaults: close and failure, no open
	p.src.push(fixedRecords()...)
	p.shutdown(t)
	var names []string
	for _, ld := range p.logs.AllLogs() {
		lrs := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
		for i := range lrs.Len() {
			names = append(names, lrs.At(i).EventName())
		}
	}
	assert.NotContains(t, names, "tcp.connection.open")
	assert.Len(t, names, 7, "close and failure records only")
}

// A batch the logs consumer has no room for is dropped and counted, and the
// reader keeps going.
func TestSlowLogsConsumerNeverBlocksReader(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.Logs.MaxBatchSize = 1
	cfg.Logs.QueueSize = 1
	p := startScripted(t, cfg)
	block := make(chan struct{})
	p.rcv.logs = blockingLogs{block}

	for range 50 {
		p.src.push(fixedRecords()[2])
	}
	require.Eventually(t, func() bool { return p.rcv.recordsRead.Load() == 50 }, 5*time.Second, time.Millisecond)
	close(block)
	p.shutdown(t)

	dropped := p.rcv.batcher.Dropped()
	assert.Positive(t, dropped)
	assert.Less(t, dropped, int64(50))
	md := p.metrics.AllMetrics()[0]
	assert.Equal(t, dropped, findSum(t, md, "tcpconn.logs.dropped"))
	assert.Equal(t, int64(50), findSum(t, md, "tcpconn.probe.records"))
}
