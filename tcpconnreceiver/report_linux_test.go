package tcpconnreceiver

import (
	"context"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// TestKernelLongLivedConnections runs the real probe with 300ms reports:
// a steady sender's interval deltas follow its rate and add up to its exact
// total, an idle connection reports every interval, and a connection
// opened before the receiver started is adopted, named, and counted only
// for what it sends afterwards.
func TestKernelLongLivedConnections(t *testing.T) {
	const interval = 300 * time.Millisecond
	pair := netnstest.NewPair(t, testOctet)
	l, err := pair.Server.Listen(pair.ServerIP.String() + ":7100")
	require.NoError(t, err)
	defer l.Close()
	var served sync.WaitGroup
	served.Add(3) // early, idle and steady
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer served.Done(); _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	ctx := context.Background()
	target := pair.ServerIP.String() + ":7100"

	// Open before the receiver: 1000 bytes that must not be counted.
	early, err := pair.Client.Dial(ctx, target)
	require.NoError(t, err)
	_, err = early.Write(make([]byte, 1000))
	require.NoError(t, err)

	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = interval
	cfg.Logs.Update = true
	cfg.Logs.FlushInterval = 50 * time.Millisecond
	cfg.Filter.IncludeCIDRs = []string{pair.ServerIP.String() + "/24"}
	names := staticResolver{
		netip.AddrPortFrom(pair.ClientIP, 0): {Workload: "client", WorkloadKind: "Deployment", Namespace: "a"},
		netip.AddrPortFrom(pair.ServerIP, 0): {Workload: "server", WorkloadKind: "Deployment", Namespace: "b"},
	}
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	r := startKernelReceiver(t, cfg, names, metrics, logs)

	idle, err := pair.Client.Dial(ctx, target)
	require.NoError(t, err)
	_, err = idle.Write(make([]byte, 10))
	require.NoError(t, err)

	steady, err := pair.Client.Dial(ctx, target)
	require.NoError(t, err)
	const chunk, every, chunks = 5000, 20 * time.Millisecond, 100 // 250 kB/s for 2s
	for range chunks {
		_, err := steady.Write(make([]byte, chunk))
		require.NoError(t, err)
		time.Sleep(every)
	}
	_, err = early.Write(make([]byte, 500))
	require.NoError(t, err)
	for _, c := range []net.Conn{steady, idle, early} {
		require.NoError(t, c.Close())
	}
	served.Wait()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	// Updates of the client ends, by client port.
	steadyPort := int64(steady.LocalAddr().(*net.TCPAddr).Port)
	idlePort := int64(idle.LocalAddr().(*net.TCPAddr).Port)
	earlyPort := int64(early.LocalAddr().(*net.TCPAddr).Port)
	deltas := map[int64][]int64{}
	closes := map[int64]plog.LogRecord{}
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		if a["tcpconn.direction"] == "inbound" || (a["source.address"] != pair.ClientIP.String() && a["tcpconn.direction"] != "unknown") {
			return
		}
		port := a["source.port"].(int64)
		if a["tcpconn.direction"] == "unknown" { // adopted with no direction: its ends are not ordered
			port = earlyPort
			if a["network.peer.port"].(int64) != 7100 {
				return
			}
		}
		switch lr.EventName() {
		case "tcp.connection.update":
			deltas[port] = append(deltas[port], a["tcpconn.interval.bytes.sent"].(int64))
		case "tcp.connection.close":
			closes[port] = lr
		}
	})

	// Steady: every full interval carries about interval*rate bytes.
	rate := float64(chunk) / every.Seconds()
	perInterval := rate * interval.Seconds()
	d := deltas[steadyPort]
	t.Logf("steady connection: %.0f bytes per interval expected, interval deltas %v", perInterval, d)
	require.GreaterOrEqual(t, len(d), 4, "updates of the steady connection")
	var sum int64
	for i, v := range d {
		sum += v
		if i > 0 && i < len(d)-1 { // the first and last intervals are partial
			assert.InDelta(t, perInterval, float64(v), perInterval, "interval %d", i)
		}
	}
	require.Contains(t, closes, steadyPort)
	total := closes[steadyPort].Attributes().AsRaw()["tcp.bytes.sent"].(int64)
	assert.Equal(t, int64(chunk*chunks), total)
	assert.LessOrEqual(t, sum, total, "reports never count more than was sent")

	// Idle: an update every interval, its 10 bytes in one of them. (The
	// start-up walk runs after Start returns and may meet the connection
	// before its open record, with nothing counted yet: now that adopted
	// ends have a direction, that first update is the idle one's too.)
	di := deltas[idlePort]
	assert.GreaterOrEqual(t, len(di), 5, "the idle connection reports every interval")
	var nonZero []int64
	for _, v := range di {
		if v != 0 {
			nonZero = append(nonZero, v)
		}
	}
	assert.Equal(t, []int64{10}, nonZero, "interval deltas %v", di)

	// Adopted: reported with its identity; the metrics count 500, not 1500.
	require.Contains(t, closes, earlyPort)
	ea := closes[earlyPort].Attributes().AsRaw()
	assert.Equal(t, true, ea["tcpconn.adopted"])
	// Its direction is unknown, but the walk saw that connect() picked its
	// port: its SYN is not counted.
	assert.Equal(t, int64(1500), ea["tcp.bytes.sent"], "the close record carries the connection's total")
	assert.Equal(t, "client", ea["source.workload.name"])
	assert.NotEmpty(t, deltas[earlyPort], "the adopted connection is reported while open")

	md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
	assert.Equal(t, int64(chunk*chunks+10+500), sumForResource(md, "tcp.bytes.sent", "k8s.deployment.name", "client"),
		"metrics: exact totals, adopted bytes from before the start left out")
	assert.Equal(t, int64(0), findSum(t, md, "tcp.connections.open"))
}

func startKernelReceiver(t *testing.T, cfg *Config, res identity.Resolver, m *consumertest.MetricsSink, l *consumertest.LogsSink) *tcpconnReceiver {
	t.Helper()
	return startKernelReceiverOn(t, cfg, res, m, l, nil)
}

// startKernelReceiverOn is startKernelReceiver with open, when not nil,
// in place of loading the probe as the receiver does.
func startKernelReceiverOn(t *testing.T, cfg *Config, res identity.Resolver, m *consumertest.MetricsSink, l *consumertest.LogsSink,
	open func(bpf.Options) (recordSource, error),
) *tcpconnReceiver {
	t.Helper()
	netnstest.RequireRoot(t)
	f := NewFactory()
	core, seen := observer.New(zap.InfoLevel)
	set := receivertest.NewNopSettings(metadata.Type)
	set.Logger = zap.New(core)
	mr, err := f.CreateMetrics(context.Background(), set, cfg, m)
	require.NoError(t, err)
	_, err = f.CreateLogs(context.Background(), set, cfg, l)
	require.NoError(t, err)
	r := mr.(*tcpconnReceiver)
	r.resolver = res
	if open != nil {
		r.open = open
	}
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	if cfg.ReportInterval > 0 {
		// The start-up walk runs in the reader after Start returns: what
		// it finds open is adopted, what opens later is not.
		require.Eventually(t, func() bool { return seen.FilterMessage("connections open at start").Len() > 0 }, 30*time.Second, 5*time.Millisecond)
	}
	return r
}
