package tcpconnreceiver

import (
	"context"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

var restartPrefix = [3]byte{10, 206, 2}

// kernelReceiver is the receiver on the real probe with its sinks.
type kernelReceiver struct {
	rcv     *tcpconnReceiver
	metrics *consumertest.MetricsSink
	logs    *consumertest.LogsSink
}

func startKernel(t *testing.T, cfg *Config, res identity.Resolver) *kernelReceiver {
	t.Helper()
	k := &kernelReceiver{metrics: new(consumertest.MetricsSink), logs: new(consumertest.LogsSink)}
	k.rcv = startKernelReceiver(t, cfg, res, k.metrics, k.logs)
	return k
}

func (k *kernelReceiver) shutdown(t *testing.T) {
	t.Helper()
	require.NoError(t, k.rcv.Shutdown(context.Background()))
}

// TestKernelRestartKeepsDirectionAndIdentity: connections open across a
// collector restart. The second collector adopts both ends of each: the
// server end (its port listens in its namespace) inbound, the client end
// (an ephemeral port) outbound, each with its workload, so the istio
// series of both reporters name the client as the source; and between the
// two collectors every byte is counted exactly once.
func TestKernelRestartKeepsDirectionAndIdentity(t *testing.T) {
	const (
		conns          = 3
		before, after  = 1000, 3000 // bytes the client sends before and after the restart
		reply1, reply2 = 200, 700   // and the server's answers
		port           = 8080
	)
	routed := netnstest.NewRouted(t, restartPrefix, 2)
	clientIP, serverIP := routed.PodIPs[0], routed.PodIPs[1]
	ids := fixture.Resolver()
	res := fixture.StaticResolver{
		netip.AddrPortFrom(clientIP, 0):    ids[netip.AddrPortFrom(fixture.ClientAddr, 0)],
		netip.AddrPortFrom(serverIP, 0):    ids[netip.AddrPortFrom(fixture.ServerAddr, 0)],
		netip.AddrPortFrom(serverIP, port): ids[netip.AddrPortFrom(fixture.ServerAddr, 8080)],
	}
	cfg := func() *Config {
		c := createDefaultConfig()
		c.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
		c.FlushInterval, c.ReportInterval = time.Hour, 200*time.Millisecond
		c.Profile = ProfileIstio
		c.Logs.Update, c.Logs.FlushInterval = true, 50*time.Millisecond
		c.Filter.IncludeCIDRs = []string{netip.PrefixFrom(clientIP, 24).Masked().String()}
		return c
	}

	l, err := routed.Pods[1].Listen(netip.AddrPortFrom(serverIP, port).String())
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, conns)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	exchange := func(c, s net.Conn, request, response int) {
		t.Helper()
		go func() { _ = netnstest.Answer(s, request, response) }()
		require.NoError(t, netnstest.Ask(c, request, response))
	}

	// The start-up walk runs in the reader, after Start returns: wait for
	// a report with the connections in it.
	reported := func(k *kernelReceiver) bool {
		n := 0
		forEachLog(k.logs.AllLogs(), func(lr plog.LogRecord) {
			if a := lr.Attributes().AsRaw(); lr.EventName() == "tcp.connection.update" && strings.HasPrefix(a[accesslog.AttrPeerAddress].(string), "10.206.2.") {
				n++
			}
		})
		return n >= 2*conns
	}
	first := startKernel(t, cfg(), res) // after its start-up walk: the connections are new to it
	var clients, servers []net.Conn
	for range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := routed.Pods[0].Dial(ctx, netip.AddrPortFrom(serverIP, port).String())
		cancel()
		require.NoError(t, err)
		s := <-accepted
		clients, servers = append(clients, c), append(servers, s)
		exchange(c, s, before, reply1)
	}
	require.Eventually(t, func() bool { return reported(first) }, 5*time.Second, 10*time.Millisecond)
	first.shutdown(t)

	second := startKernel(t, cfg(), res)
	require.Eventually(t, func() bool { return reported(second) }, 5*time.Second, 10*time.Millisecond, "the second collector adopts the connections")
	for i := range conns {
		exchange(clients[i], servers[i], after, reply2)
	}
	for i := range conns {
		require.NoError(t, clients[i].Close())
		_, _ = io.Copy(io.Discard, servers[i]) // the client's FIN
		require.NoError(t, servers[i].Close())
	}
	time.Sleep(300 * time.Millisecond)
	second.shutdown(t)

	bytesOf := func(k *kernelReceiver, reporter string) (sent, received int64) {
		md := k.metrics.AllMetrics()[len(k.metrics.AllMetrics())-1]
		want := map[string]string{"reporter": reporter, "source_workload": "frontend", "destination_workload": "checkout"}
		return sumWhereAll(md, "istio_tcp_sent_bytes", want), sumWhereAll(md, "istio_tcp_received_bytes", want)
	}
	for _, reporter := range []string{"source", "destination"} {
		s1, r1 := bytesOf(first, reporter)
		s2, r2 := bytesOf(second, reporter)
		assert.Equal(t, int64(conns*reply1), s1, "%s, first collector: what the server sent", reporter)
		assert.Equal(t, int64(conns*before), r1, "%s, first collector: what the client sent", reporter)
		assert.Equal(t, int64(conns*reply2), s2, "%s, second collector: only what the server sent after the restart", reporter)
		assert.Equal(t, int64(conns*after), r2, "%s, second collector: only what the client sent after the restart", reporter)
		md := second.metrics.AllMetrics()[len(second.metrics.AllMetrics())-1]
		assert.Equal(t, int64(conns), sumWhereAll(md, "istio_tcp_connections_closed", map[string]string{
			"reporter": reporter, "source_workload": "frontend", "destination_workload": "checkout",
			"destination_service": "checkout.shop.svc.cluster.local"}), reporter)
		assert.Zero(t, sumWhereAll(md, "istio_tcp_connections_opened", map[string]string{"reporter": reporter}), "adopted: not opened again")
	}

	dirs := map[string]int{}
	forEachLog(second.logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		if lr.EventName() != "tcp.connection.close" || a[accesslog.AttrSourceAddress] != clientIP.String() {
			return
		}
		dirs[a[accesslog.AttrDirection].(string)]++
		assert.Equal(t, true, a[accesslog.AttrAdopted])
		assert.Equal(t, serverIP.String(), a[accesslog.AttrDestAddress])
		assert.Equal(t, "frontend", a["source.workload.name"])
		assert.Equal(t, "checkout", a["destination.workload.name"])
	})
	assert.Equal(t, map[string]int{"inbound": conns, "outbound": conns}, dirs, "both ends of each connection, each in its direction")
}
