package tcpconnreceiver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// healthOctet is the range of the TCP health tests (retransmits by type,
// listener health): 10.208.0.0/16, a range of their own. (They shared the
// bpf package's 10.205 once: go test runs packages side by side, both
// processes numbered their pairs from 1, and each probe saw the other's
// connections under the same addresses.)
const healthOctet = 208

func nsIptables(t *testing.T, ns *netnstest.NS, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "iptables"}, args...)...).CombinedOutput()
	require.NoError(t, err, "iptables %s: %s", strings.Join(args, " "), out)
}

func totalRetrans(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	var info *unix.TCPInfo
	var ierr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}))
	require.NoError(t, ierr)
	return info.Total_retrans
}

// TestKernelRetransmitsByType runs the real probe through the receiver:
// connects whose first SYN the server drops, then 512 KiB each way with
// 10 % of the packets lost on the way
// (both directions). system.network.tcp.retransmits of
// the client workload counts one syn per dropped SYN, and its types add
// up to tcp.retransmits; each close record's tcp.retransmits.<type> add up
// to its tcp.retransmits, which is the socket's own (TCP_INFO).
func TestKernelRetransmitsByType(t *testing.T) {
	const size = 512 << 10
	pair := netnstest.NewPair(t, healthOctet)
	l, err := pair.Server.Listen(pair.ServerIP.String() + ":7300")
	require.NoError(t, err)
	defer l.Close()

	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.Logs.FlushInterval = 50 * time.Millisecond
	cfg.Filter.IncludeCIDRs = []string{pair.ServerIP.String() + "/24"}
	names := staticResolver{
		netip.AddrPortFrom(pair.ClientIP, 0): {Workload: "client", WorkloadKind: "Deployment", Namespace: "a"},
		netip.AddrPortFrom(pair.ServerIP, 0): {Workload: "server", WorkloadKind: "Deployment", Namespace: "b"},
	}
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	r := startKernelReceiver(t, cfg, names, metrics, logs)

	ctx := context.Background()
	clientRetrans := map[int64]uint32{} // client port -> TCP_INFO total_retrans
	serverRetrans := map[int64]uint32{}
	synRule := []string{"INPUT", "-p", "tcp", "--syn", "--dport", "7300", "-m", "statistic", "--mode", "nth", "--every", "1000000000", "--packet", "0", "-j", "DROP"}
	const synDropped = 2
	for range synDropped {
		nsIptables(t, pair.Server, append([]string{"-A"}, synRule...)...)
		c, err := pair.Client.Dial(ctx, l.Addr().String())
		require.NoError(t, err)
		s, err := l.Accept()
		require.NoError(t, err)
		nsIptables(t, pair.Server, append([]string{"-D"}, synRule...)...)
		port := int64(c.LocalAddr().(*net.TCPAddr).Port)
		clientRetrans[port], serverRetrans[port] = totalRetrans(t, c), totalRetrans(t, s)
		require.NoError(t, c.Close())
		require.NoError(t, s.Close())
	}
	lossRule := []string{"INPUT", "-p", "tcp", "--dport", "7300", "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP"}
	lossBack := []string{"INPUT", "-p", "tcp", "--sport", "7300", "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP"}
	c, err := pair.Client.Dial(ctx, l.Addr().String())
	require.NoError(t, err)
	s, err := l.Accept()
	require.NoError(t, err)
	// The loss starts once the handshake is done: the syn type counts
	// exactly the SYNs dropped above.
	nsIptables(t, pair.Server, append([]string{"-A"}, lossRule...)...)
	nsIptables(t, pair.Client, append([]string{"-A"}, lossBack...)...)
	done := make(chan error, 1)
	go func() { done <- netnstest.Answer(s, size, size) }()
	require.NoError(t, netnstest.Ask(c, size, size))
	require.NoError(t, <-done)
	nsIptables(t, pair.Server, append([]string{"-D"}, lossRule...)...)
	nsIptables(t, pair.Client, append([]string{"-D"}, lossBack...)...)
	port := int64(c.LocalAddr().(*net.TCPAddr).Port)
	clientRetrans[port], serverRetrans[port] = settledRetrans(t, c, s)
	require.NoError(t, c.Close())
	require.NoError(t, s.Close())
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	assert.Equal(t, 2*len(clientRetrans), checkCloseRetransmits(t, logs, clientRetrans, serverRetrans), "both close records of each connection")

	md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
	var wantClient, wantServer int64
	for p, n := range clientRetrans {
		wantClient += int64(n)
		wantServer += int64(serverRetrans[p])
	}
	byType := map[string]int64{}
	var clientByType int64
	forEachSumPoint(md, "system.network.tcp.retransmits", func(dp pmetric.NumberDataPoint) {
		dir, _ := dp.Attributes().Get("direction")
		typ, _ := dp.Attributes().Get("network.tcp.retransmit.type")
		byType[dir.Str()+"/"+typ.Str()] += dp.IntValue()
		if dir.Str() == "outbound" {
			clientByType += dp.IntValue()
		}
	})
	t.Logf("system.network.tcp.retransmits: %v", byType)
	assert.Equal(t, int64(synDropped), byType["outbound/syn"], "one syn retransmit per SYN dropped")
	assert.Equal(t, wantClient, clientByType, "the client's types add up to its sockets' total_retrans")
	assert.Equal(t, wantClient, sumForResource(md, "tcp.retransmits", "k8s.deployment.name", "client"), "tcp.retransmits of the client")
	assert.Equal(t, wantServer, sumForResource(md, "system.network.tcp.retransmits", "k8s.deployment.name", "server"), "the server's types add up")
	var data int64
	for _, d := range []string{"outbound", "inbound"} {
		data += byType[d+"/fast"] + byType[d+"/timeout"] + byType[d+"/tail_loss_probe"]
	}
	assert.Positive(t, data, "data retransmits are typed")
}

// checkCloseRetransmits checks the close records of the connections in
// client and server (TCP_INFO total_retrans by the client's port): their
// tcp.retransmits and the sum of their tcp.retransmits.<type> are the
// socket's. It returns how many it found.
func checkCloseRetransmits(t *testing.T, logs *consumertest.LogsSink, client, server map[int64]uint32) int {
	t.Helper()
	closes := 0
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		if lr.EventName() != "tcp.connection.close" {
			return
		}
		a := lr.Attributes().AsRaw()
		port, _ := a["source.port"].(int64)
		want, ok := client[port]
		if a["tcpconn.direction"] == "inbound" {
			want, ok = server[port]
		}
		if !ok {
			return
		}
		closes++
		var byType int64
		for k, v := range a {
			if strings.HasPrefix(k, "tcp.retransmits.") {
				byType += v.(int64)
			}
		}
		t.Logf("%s port %d: tcp.retransmits %v, by type %d", a["tcpconn.direction"], port, a["tcp.retransmits"], byType)
		assert.Equal(t, int64(want), a["tcp.retransmits"], "%s close of port %d: TCP_INFO's total", a["tcpconn.direction"], port)
		assert.Equal(t, int64(want), byType, "%s close of port %d: by type", a["tcpconn.direction"], port)
	})
	return closes
}

// settledRetrans waits until neither socket retransmits any more (at most
// 30 s) and returns their TCP_INFO total_retrans.
func settledRetrans(t *testing.T, c, s net.Conn) (client, server uint32) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ci, si := totalRetrans(t, c), totalRetrans(t, s)
		time.Sleep(200 * time.Millisecond) // settled: nothing more retransmitted
		if ci == totalRetrans(t, c) && si == totalRetrans(t, s) || time.Now().After(deadline) {
			return ci, si
		}
	}
}

// TestKernelRetransmitsByTypeWhileLive: one connection exchanging 64 KiB
// each way, again and again, with 10 % of its packets lost both ways,
// reports every 200 ms and a flush every 300 ms. A flush shows its data
// retransmits in system.network.tcp.retransmits while it is still open
// (each report adds what grew since the last); after its close each
// end's types add up to its socket's total_retrans (TCP_INFO), in the
// metric as on the close record. Over IPv4 and over IPv6.
func TestKernelRetransmitsByTypeWhileLive(t *testing.T) {
	for _, family := range []string{"ipv4", "ipv6"} {
		t.Run(family, func(t *testing.T) { testRetransmitsByTypeWhileLive(t, family == "ipv6") })
	}
}

func testRetransmitsByTypeWhileLive(t *testing.T, v6 bool) {
	const chunk = 64 << 10
	pair := netnstest.NewPair(t, healthOctet)
	server, client, firewall := pair.ServerIP, pair.ClientIP, "iptables"
	if v6 {
		server, client = pair.AddIPv6(t)
		firewall = "ip6tables"
	}
	l, err := pair.Server.Listen(netip.AddrPortFrom(server, 7340).String())
	require.NoError(t, err)
	defer l.Close()

	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.ReportInterval = 200 * time.Millisecond
	cfg.FlushInterval = 300 * time.Millisecond
	cfg.Logs.FlushInterval = 50 * time.Millisecond
	cfg.Filter.IncludeCIDRs = []string{subnet(server)}
	names := staticResolver{
		netip.AddrPortFrom(client, 0): {Workload: "client", WorkloadKind: "Deployment", Namespace: "a"},
		netip.AddrPortFrom(server, 0): {Workload: "server", WorkloadKind: "Deployment", Namespace: "b"},
	}
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	r := startKernelReceiver(t, cfg, names, metrics, logs)

	c, err := pair.Client.Dial(context.Background(), netip.AddrPortFrom(server, 7340).String())
	require.NoError(t, err)
	defer c.Close()
	s, err := l.Accept()
	require.NoError(t, err)
	defer s.Close()
	loss := []struct {
		ns   *netnstest.NS
		rule []string
	}{
		{pair.Server, []string{"INPUT", "-p", "tcp", "--dport", "7340", "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP"}},
		{pair.Client, []string{"INPUT", "-p", "tcp", "--sport", "7340", "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP"}},
	}
	for _, l := range loss {
		l.ns.Exec(t, append([]string{firewall, "-A"}, l.rule...)...)
	}
	// Data retransmits in the last flush, while the connection lives.
	dataLive := func() (n int64) {
		all := metrics.AllMetrics()
		if len(all) == 0 {
			return 0
		}
		forEachSumPoint(all[len(all)-1], "system.network.tcp.retransmits", func(dp pmetric.NumberDataPoint) {
			if typ, _ := dp.Attributes().Get("network.tcp.retransmit.type"); typ.Str() != "syn" && typ.Str() != "syn_ack" {
				n += dp.IntValue()
			}
		})
		return n
	}
	exchanges := 0
	for deadline := time.Now().Add(time.Minute); dataLive() == 0; exchanges++ {
		require.True(t, time.Now().Before(deadline), "no data retransmit in a flush while the connection lived (%d exchanges)", exchanges)
		done := make(chan error, 1)
		go func() { done <- netnstest.Answer(s, chunk, chunk) }()
		require.NoError(t, netnstest.Ask(c, chunk, chunk))
		require.NoError(t, <-done)
	}
	t.Logf("data retransmits flushed while open: %d, after %d exchanges", dataLive(), exchanges)
	for _, l := range loss {
		l.ns.Exec(t, append([]string{firewall, "-D"}, l.rule...)...)
	}
	ci, si := settledRetrans(t, c, s)
	port := int64(c.LocalAddr().(*net.TCPAddr).Port)
	require.NoError(t, c.Close())
	require.NoError(t, s.Close())
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
	assert.Equal(t, int64(ci), sumForResource(md, "system.network.tcp.retransmits", "k8s.deployment.name", "client"), "the client's types add up to TCP_INFO's")
	assert.Equal(t, int64(si), sumForResource(md, "system.network.tcp.retransmits", "k8s.deployment.name", "server"), "the server's types add up to TCP_INFO's")
	assert.Equal(t, int64(ci), sumForResource(md, "tcp.retransmits", "k8s.deployment.name", "client"))
	assert.Equal(t, 2, checkCloseRetransmits(t, logs, map[int64]uint32{port: ci}, map[int64]uint32{port: si}), "both close records")
}

// TestKernelRTTWhileLive runs the real probe with 200ms reports over a
// connection that lives about 1.5 s: every update record carries a
// smoothed and a minimum RTT (minimum <= smoothed), and the tcp.rtt
// histogram holds one sample per update and close record of its two
// ends, not only the closes.
func TestKernelRTTWhileLive(t *testing.T) {
	pair := netnstest.NewPair(t, healthOctet)
	l, err := pair.Server.Listen(pair.ServerIP.String() + ":7310")
	require.NoError(t, err)
	defer l.Close()

	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 200 * time.Millisecond
	cfg.Logs.Update = true
	cfg.Logs.FlushInterval = 50 * time.Millisecond
	cfg.Filter.IncludeCIDRs = []string{pair.ServerIP.String() + "/24"}
	names := staticResolver{
		netip.AddrPortFrom(pair.ClientIP, 0): {Workload: "client", WorkloadKind: "Deployment", Namespace: "a"},
		netip.AddrPortFrom(pair.ServerIP, 0): {Workload: "server", WorkloadKind: "Deployment", Namespace: "b"},
	}
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	r := startKernelReceiver(t, cfg, names, metrics, logs)

	c, err := pair.Client.Dial(context.Background(), l.Addr().String())
	require.NoError(t, err)
	s, err := l.Accept()
	require.NoError(t, err)
	for range 15 {
		require.NoError(t, netnstest.Ask(c, 1000, 0))
		_, err := s.Read(make([]byte, 1000))
		require.NoError(t, err)
		_, err = s.Write([]byte{1})
		require.NoError(t, err)
		_, err = c.Read(make([]byte, 1))
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, c.Close())
	require.NoError(t, s.Close())
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, r.Shutdown(context.Background()))

	var updates, samples int
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		if a["destination.port"] != int64(7310) {
			return
		}
		srtt, _ := a["tcp.rtt.smoothed_us"].(int64)
		switch lr.EventName() {
		case "tcp.connection.update":
			updates++
			minRTT, _ := a["tcp.rtt.min_us"].(int64)
			assert.Positive(t, srtt, "update of %s", a["tcpconn.direction"])
			assert.Positive(t, minRTT, "update of %s", a["tcpconn.direction"])
			assert.LessOrEqual(t, minRTT, srtt)
		case "tcp.connection.close":
		default:
			return
		}
		if srtt > 0 {
			samples++
		}
	})
	assert.GreaterOrEqual(t, updates, 8, "both ends reported while the connection lived")
	var count uint64
	forEachMetric(metrics.AllMetrics()[len(metrics.AllMetrics())-1], func(m pmetric.Metric) {
		if m.Name() == "tcp.rtt" {
			for i := range m.Histogram().DataPoints().Len() {
				count += m.Histogram().DataPoints().At(i).Count()
			}
		}
	})
	t.Logf("%d update records, tcp.rtt count %d", updates, count)
	assert.Equal(t, uint64(samples), count, "one RTT sample per update and close record")
}

// TestKernelListenOverflows: a listener with a backlog of 1 that never
// accepts, and clients that keep connecting. The server pod's
// system.network.tcp.accept_queue.overflows and .listen.drops equal its
// namespace's TcpExtListenOverflows and TcpExtListenDrops (nstat), once
// the listener is closed and a report walk has read them; the client pod
// has none.
func TestKernelListenOverflows(t *testing.T) {
	pair := netnstest.NewPair(t, healthOctet)
	r, metrics, _ := startHealthReceiver(t, []netip.Addr{pair.ServerIP}, []netip.Addr{pair.ClientIP})
	lfd := backlogOneListener(t, pair, &unix.SockaddrInet4{Port: 7320, Addr: pair.ServerIP.As4()})
	overflows, drops := overflow(t, pair, lfd, netip.AddrPortFrom(pair.ServerIP, 7320))
	require.NoError(t, r.Shutdown(context.Background()))

	md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
	assert.Equal(t, overflows, sumForResource(md, "system.network.tcp.accept_queue.overflows", "k8s.deployment.name", "server"))
	assert.Equal(t, drops, sumForResource(md, "system.network.tcp.listen.drops", "k8s.deployment.name", "server"))
	assert.Zero(t, sumForResource(md, "system.network.tcp.accept_queue.overflows", "k8s.deployment.name", "client"))
}

// overflow has clients connect to lfd, a backlog-1 listener at target
// that never accepts, for 2.5 s, then closes it (its counters stop there)
// and returns the server namespace's TcpExtListenOverflows and
// TcpExtListenDrops (nstat), once report walks have had time to read them.
func overflow(t *testing.T, pair *netnstest.Pair, lfd int, target netip.AddrPort) (overflows, drops int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	conns := make(chan net.Conn, 8)
	for range 8 {
		go func() {
			c, _ := pair.Client.Dial(ctx, target.String())
			conns <- c
		}()
	}
	<-ctx.Done()
	require.NoError(t, unix.Close(lfd))
	for range 8 {
		if c := <-conns; c != nil {
			c.Close()
		}
	}
	overflows = pair.Server.Nstat(t, "TcpExtListenOverflows")
	drops = pair.Server.Nstat(t, "TcpExtListenDrops")
	require.Positive(t, overflows, "the backlog-1 listener overflowed")
	t.Logf("nstat: ListenOverflows %d, ListenDrops %d", overflows, drops)
	time.Sleep(400 * time.Millisecond) // report walks read them
	return overflows, drops
}

// TestKernelAcceptQueue: a listener with a backlog of 1 that never accepts
// holds two connections: the server pod's accept_queue.size is 2 and its
// .limit 1 on server.port 7330, as the walks before the final flush saw.
func TestKernelAcceptQueue(t *testing.T) {
	pair := netnstest.NewPair(t, healthOctet)
	r, metrics, _ := startHealthReceiver(t, []netip.Addr{pair.ServerIP}, []netip.Addr{pair.ClientIP})
	lfd := backlogOneListener(t, pair, &unix.SockaddrInet4{Port: 7330})
	defer unix.Close(lfd)
	for range 2 {
		c, err := pair.Client.Dial(context.Background(), netip.AddrPortFrom(pair.ServerIP, 7330).String())
		require.NoError(t, err)
		defer c.Close()
	}
	time.Sleep(400 * time.Millisecond) // report walks see the queue
	require.NoError(t, r.Shutdown(context.Background()))

	assertTwoOfOne(t, metrics.AllMetrics()[len(metrics.AllMetrics())-1], 7330)
}

// TestKernelListenerHealthIPv6: a pod with IPv6 addresses only, which its
// IPv6 address names. Backlog-1 listeners that never accept, on [::] and
// on the pod's address, hold two connections each: accept_queue.size 2 and
// .limit 1 on each port; a third, overflowed for 2.5 s, makes the pod's
// accept_queue.overflows and listen.drops equal its namespace's nstat;
// connects to a closed port are the pod's resets with cause refused (the
// probe reads the SYN's IPv6 header) and the client pod's failed
// connects, refused, each failure record with its time to failure.
func TestKernelListenerHealthIPv6(t *testing.T) {
	const refusals = 3
	pair := netnstest.NewPair(t, healthOctet)
	server, client := pair.AddIPv6(t)
	for _, ns := range []*netnstest.NS{pair.Server, pair.Client} {
		ns.Exec(t, "ip", "-4", "addr", "flush", "scope", "global")
	}
	r, metrics, logs := startHealthReceiver(t, []netip.Addr{server}, []netip.Addr{client})
	for _, sa := range []*unix.SockaddrInet6{{Port: 7350}, {Port: 7351, Addr: server.As16()}} {
		lfd := backlogOneListener(t, pair, sa)
		defer unix.Close(lfd)
		for range 2 {
			c, err := pair.Client.Dial(context.Background(), netip.AddrPortFrom(server, uint16(sa.Port)).String())
			require.NoError(t, err)
			defer c.Close()
		}
	}
	for range refusals {
		_, err := pair.Client.Dial(context.Background(), netip.AddrPortFrom(server, 7353).String())
		require.ErrorIs(t, err, unix.ECONNREFUSED)
	}
	lfd := backlogOneListener(t, pair, &unix.SockaddrInet6{Port: 7352, Addr: server.As16()})
	overflows, drops := overflow(t, pair, lfd, netip.AddrPortFrom(server, 7352))
	require.NoError(t, r.Shutdown(context.Background()))

	md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
	assertTwoOfOne(t, md, 7350)
	assertTwoOfOne(t, md, 7351)
	assert.Equal(t, overflows, sumForResource(md, "system.network.tcp.accept_queue.overflows", "k8s.deployment.name", "server"))
	assert.Equal(t, drops, sumForResource(md, "system.network.tcp.listen.drops", "k8s.deployment.name", "server"))
	assert.Zero(t, sumForResource(md, "system.network.tcp.accept_queue.overflows", "k8s.deployment.name", "client"))
	var refused int64
	forEachResourceSumPoint(md, "system.network.tcp.resets", "k8s.deployment.name", "server", func(dp pmetric.NumberDataPoint) {
		if cause, _ := dp.Attributes().Get("tcp.close.cause"); cause.Str() == "refused" {
			refused += dp.IntValue()
		}
	})
	assert.Equal(t, int64(refusals), refused, "the server pod's resets, cause refused")
	refused = 0
	forEachResourceSumPoint(md, "tcp.connections.failed", "k8s.deployment.name", "client", func(dp pmetric.NumberDataPoint) {
		if e, _ := dp.Attributes().Get("error.type"); e.Str() == "refused" {
			refused += dp.IntValue()
		}
	})
	assert.Equal(t, int64(refusals), refused, "the client pod's failed connects, refused")
	failures := 0
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		if lr.EventName() != "tcp.connection.failure" || a["destination.port"] != int64(7353) {
			return
		}
		failures++
		assert.Equal(t, "refused", a["error.type"])
		assert.Equal(t, "ipv6", a["network.type"])
		assert.Equal(t, client.String(), a["source.address"])
		took, _ := a["tcp.handshake.duration"].(float64)
		assert.Positive(t, took, "time to failure")
	})
	assert.Equal(t, refusals, failures, "the client's failure records")
}

// TestKernelDualStackListener: a pod with an IPv4 and an IPv6 address and
// a backlog-1 listener on [::] that takes both (IPV6_V6ONLY off) and
// never accepts: an IPv4 client's connection (its child socket is
// AF_INET6 with v4-mapped addresses) and an IPv6 client's share its
// queue, 2 of 1 on the pod named by its IPv4 address. The server's open
// record of the IPv4 connection names it by IPv4 addresses, network.type
// ipv4, the IPv6 one ipv6, and each carries the client's
// tcp.connection.uid.
func TestKernelDualStackListener(t *testing.T) {
	pair := netnstest.NewPair(t, healthOctet)
	server6, client6 := pair.AddIPv6(t)
	r, metrics, logs := startHealthReceiver(t, []netip.Addr{pair.ServerIP, server6}, []netip.Addr{pair.ClientIP, client6})
	lfd := backlogOneListener(t, pair, &unix.SockaddrInet6{Port: 7360})
	defer unix.Close(lfd)
	ports := map[int64]string{} // client port -> network.type
	for _, target := range []netip.Addr{pair.ServerIP, server6} {
		c, err := pair.Client.Dial(context.Background(), netip.AddrPortFrom(target, 7360).String())
		require.NoError(t, err)
		defer c.Close()
		ports[int64(c.LocalAddr().(*net.TCPAddr).Port)] = map[bool]string{true: "ipv4", false: "ipv6"}[target.Is4()]
	}
	time.Sleep(400 * time.Millisecond) // report walks see the queue
	require.NoError(t, r.Shutdown(context.Background()))

	assertTwoOfOne(t, metrics.AllMetrics()[len(metrics.AllMetrics())-1], 7360)

	uids := map[int64][]string{}
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		port, _ := a["source.port"].(int64)
		network, ok := ports[port]
		if lr.EventName() != "tcp.connection.open" || !ok {
			return
		}
		src, dst := pair.ClientIP, pair.ServerIP
		if network == "ipv6" {
			src, dst = client6, server6
		}
		what := fmt.Sprintf("%s open, %s", a["tcpconn.direction"], network)
		assert.Equal(t, network, a["network.type"], what)
		assert.Equal(t, src.String(), a["source.address"], what)
		assert.Equal(t, dst.String(), a["destination.address"], what)
		uid, _ := a["tcp.connection.uid"].(string)
		uids[port] = append(uids[port], uid)
	})
	for port, u := range uids {
		require.Len(t, u, 2, "both ends' open records of port %d (%s)", port, ports[port])
		assert.NotEmpty(t, u[0])
		assert.Equal(t, u[0], u[1], "one uid on both ends, port %d (%s)", port, ports[port])
	}
	assert.Len(t, uids, 2)
}

// assertTwoOfOne: the server pod's listener on port held 2 connections
// against a limit of 1 (accept_queue.size and .limit).
func assertTwoOfOne(t *testing.T, md pmetric.Metrics, port uint16) {
	t.Helper()
	size, ok := serverGauge(md, "system.network.tcp.accept_queue.size", port)
	require.True(t, ok, "the server pod's listener on %d", port)
	assert.Equal(t, int64(2), size, "port %d", port)
	limit, _ := serverGauge(md, "system.network.tcp.accept_queue.limit", port)
	assert.Equal(t, int64(1), limit, "port %d", port)
}

// serverGauge sums the server pod's points of a gauge on server.port
// port, and says whether it has any.
func serverGauge(md pmetric.Metrics, name string, port uint16) (v int64, found bool) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		if w, ok := rms.At(i).Resource().Attributes().Get("k8s.deployment.name"); !ok || w.Str() != "server" {
			continue
		}
		forEachMetric(pmetricOf(rms.At(i)), func(m pmetric.Metric) {
			if m.Name() != name {
				return
			}
			for d := range m.Gauge().DataPoints().Len() {
				dp := m.Gauge().DataPoints().At(d)
				if p, _ := dp.Attributes().Get("server.port"); p.Int() == int64(port) {
					v, found = v+dp.IntValue(), true
				}
			}
		})
	}
	return v, found
}

// startHealthReceiver starts the receiver of the listener-health tests: a
// report every 100 ms, access logs (open records too) flushed every 50 ms, the pair's two
// pods named by their addresses (client and server) and kept by the
// filter (the server's subnets).
func startHealthReceiver(t *testing.T, server, client []netip.Addr) (*tcpconnReceiver, *consumertest.MetricsSink, *consumertest.LogsSink) {
	t.Helper()
	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 100 * time.Millisecond
	cfg.Logs.Open = true
	cfg.Logs.FlushInterval = 50 * time.Millisecond
	names := staticResolver{}
	for _, a := range server {
		cfg.Filter.IncludeCIDRs = append(cfg.Filter.IncludeCIDRs, subnet(a))
		names[netip.AddrPortFrom(a, 0)] = &identity.Identity{Workload: "server", WorkloadKind: "Deployment", Namespace: "b"}
	}
	for _, a := range client {
		names[netip.AddrPortFrom(a, 0)] = &identity.Identity{Workload: "client", WorkloadKind: "Deployment", Namespace: "a"}
	}
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	return startKernelReceiver(t, cfg, names, metrics, logs), metrics, logs
}

// subnet is the pair subnet of a, a netnstest.Pair's address: its /24,
// or its /64 (Pair.AddIPv6).
func subnet(a netip.Addr) string {
	bits := 24
	if a.Is6() {
		bits = 64
	}
	return netip.PrefixFrom(a, bits).Masked().String()
}

// backlogOneListener listens at sa in the server pod with a backlog of 1,
// and never accepts; the caller closes the socket. An IPv6 socket takes
// IPv4 connections too (IPV6_V6ONLY off).
func backlogOneListener(t *testing.T, pair *netnstest.Pair, sa unix.Sockaddr) int {
	t.Helper()
	family := unix.AF_INET
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		family = unix.AF_INET6
	}
	var lfd int
	require.NoError(t, pair.Server.Do(func() error {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		lfd = fd
		if family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
				return err
			}
		}
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		return unix.Listen(fd, 1)
	}))
	return lfd
}
