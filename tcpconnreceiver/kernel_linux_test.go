package tcpconnreceiver

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// This package's kernel tests use 10.202.0.0/16.
const testOctet = 202

// TestKernelShutdownDeliversEverything runs the real probe through the
// receiver and shuts down right after the traffic: every close and failure
// record produced before Shutdown must reach the sinks, with exact bytes.
// goleak (TestMain) checks that no goroutine outlives Shutdown.
func TestKernelShutdownDeliversEverything(t *testing.T) {
	const (
		conns    = 3
		request  = 100000
		response = 5000
	)
	pair := netnstest.NewPair(t, testOctet)
	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.Probe.PollInterval = time.Minute // nothing is read before Shutdown wakes the reader
	cfg.Filter.IncludeCIDRs = []string{pair.ServerIP.String() + "/24"}

	f := NewFactory()
	set := receivertest.NewNopSettings(metadata.Type)
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	mr, err := f.CreateMetrics(context.Background(), set, cfg, metrics)
	require.NoError(t, err)
	lr, err := f.CreateLogs(context.Background(), set, cfg, logs)
	require.NoError(t, err)
	require.NoError(t, mr.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, lr.Start(context.Background(), componenttest.NewNopHost()))

	srv := netnstest.StartServer(t, pair, 7070, request, response)
	for range conns {
		_, err := srv.Exchange(context.Background(), pair)
		require.NoError(t, err)
	}
	require.NoError(t, netnstest.Refused(context.Background(), pair, 7071))
	srv.WaitServed(t, conns) // the server's close follows the client's

	require.NoError(t, mr.Shutdown(context.Background()))
	require.NoError(t, lr.Shutdown(context.Background()))

	var closesOut, closesIn, failures int
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes()
		dir, _ := a.Get(accesslog.AttrDirection)
		sent, _ := a.Get(accesslog.AttrBytesSent)
		recv, _ := a.Get(accesslog.AttrBytesReceived)
		switch lr.EventName() {
		case "tcp.connection.close":
			if dir.Str() == "outbound" {
				closesOut++
				assert.Equal(t, int64(request), sent.Int())
				assert.Equal(t, int64(response), recv.Int())
			} else {
				closesIn++
				assert.Equal(t, int64(response), sent.Int())
				assert.Equal(t, int64(request), recv.Int())
			}
		case "tcp.connection.failure":
			failures++
			et, _ := a.Get(accesslog.AttrErrorType)
			assert.Equal(t, "refused", et.Str())
		}
	})
	assert.Equal(t, conns, closesOut)
	assert.Equal(t, conns, closesIn)
	assert.Equal(t, 1, failures)

	require.Len(t, metrics.AllMetrics(), 1)
	md := metrics.AllMetrics()[0]
	assert.Equal(t, int64(2*conns), findSum(t, md, "tcp.connections.opened"))
	assert.Equal(t, int64(2*conns), findSum(t, md, "tcp.connections.closed"))
	assert.Equal(t, int64(conns*(request+response)), findSum(t, md, "tcp.bytes.sent"))
	assert.Equal(t, int64(conns*(request+response)), findSum(t, md, "tcp.bytes.received"))
	assert.Equal(t, int64(1), findSum(t, md, "tcp.connections.failed"))
	assert.Zero(t, findSum(t, md, "tcpconn.probe.records.dropped"))
}

// A probe that cannot load fails Start with the reason, and Shutdown after
// a failed Start is clean. (Missing privileges are tested in package bpf.)
func TestStartFailsWithReason(t *testing.T) {
	netnstest.RequireRoot(t)
	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.Probe.AttachMode = "fentry"
	r, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	require.NoError(t, err)
	err = r.Start(context.Background(), componenttest.NewNopHost())
	require.ErrorContains(t, err, `start tcpconn probe: unknown attach mode "fentry"`)
	require.NoError(t, r.Shutdown(context.Background()))
}
