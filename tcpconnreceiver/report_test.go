package tcpconnreceiver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/bpf"
)

// TestReportsCountDeltasAndOpenConnections drives the report walks with a
// scripted probe: an adopted connection counts only what flows after the
// start, a live one rises at each report and adds only the rest at close,
// and a connection whose close was lost leaves the open count after two
// walks and is counted as lost.
func TestReportsCountDeltasAndOpenConnections(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 100 * time.Millisecond
	cfg.Logs.Update = true

	recs := fixedRecords()
	adopted := recs[0]
	adopted.Kind, adopted.ConnID, adopted.Flags, adopted.Start = bpf.KindUpdate, 100, bpf.FlagAdopted, time.Time{}
	adopted.Direction, adopted.BytesSent = bpf.DirectionUnknown, 1000
	live := recs[0] // outbound open of connection 1
	update := func(r bpf.Record, sent uint64) bpf.Record {
		r.Kind, r.BytesSent, r.OldState, r.NewState = bpf.KindUpdate, sent, bpf.StateEstablished, bpf.StateEstablished
		return r
	}

	src := &scriptedSource{}
	src.setLive(adopted) // open before the receiver starts
	p := startScriptedSource(t, cfg, src)
	waitWalks := func(n int) {
		t.Helper()
		target := src.walkCount() + n
		require.Eventually(t, func() bool { return src.walkCount() >= target }, 5*time.Second, time.Millisecond)
	}
	waitWalks(1)

	p.src.push(live)
	adopted.BytesSent = 1500
	src.setLive(adopted, update(live, 300))
	waitWalks(2)

	closing := recs[2] // outbound close of connection 1: 100000 bytes in all
	p.src.push(closing)
	src.setLive(adopted)
	waitWalks(2)

	src.setLive() // the adopted connection's close record was lost
	waitWalks(3)
	p.shutdown(t)

	md := p.metrics.AllMetrics()[0]
	assert.Equal(t, int64(500+100000), findSum(t, md, "tcp.bytes.sent"), "adopted: only what flowed after start; live: its exact total")
	assert.Equal(t, int64(1), findSum(t, md, "tcp.connections.opened"), "adopted connections are not new")
	assert.Equal(t, int64(1), findSum(t, md, "tcp.connections.closed"))
	assert.Equal(t, int64(0), findSum(t, md, "tcp.connections.open"))
	assert.Equal(t, int64(1), findSum(t, md, "tcpconn.connections.lost"))

	var updates int
	forEachLog(p.logs.AllLogs(), func(lr plog.LogRecord) {
		if lr.EventName() == "tcp.connection.update" {
			updates++
		}
	})
	assert.GreaterOrEqual(t, updates, 4, "update records for both connections at each walk")
}

// TestRefusedConnectsCounted: at each report walk the connects a local
// address refused since the previous walk go to its workload series, as
// system.network.tcp.resets{tcp.close.cause=refused}, inbound, peer
// unknown; an address the filter drops is not counted.
func TestRefusedConnectsCounted(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 50 * time.Millisecond
	cfg.Filter.ExcludeCIDRs = []string{"10.9.0.0/16"}

	src := &scriptedSource{}
	src.setLive()
	server := fixedRecords()[1].LocalAddr // the inbound end's address
	src.mu.Lock()
	src.refused = []bpf.Refused{{NetNS: 1, Local: server, Count: 3}, {NetNS: 1, Local: netip.MustParseAddr("10.9.0.1"), Count: 50}}
	src.mu.Unlock()
	p := startScriptedSource(t, cfg, src)
	waitWalks := func(n int) {
		t.Helper()
		target := src.walkCount() + n
		require.Eventually(t, func() bool { return src.walkCount() >= target }, 5*time.Second, time.Millisecond)
	}
	waitWalks(2)
	src.mu.Lock()
	src.refused[0].Count = 5 // two more
	src.mu.Unlock()
	waitWalks(2)
	p.shutdown(t)

	md := p.metrics.AllMetrics()[0]
	var got []map[string]any
	var total int64
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				if m := ms.At(k); m.Name() == "system.network.tcp.resets" {
					for d := range m.Sum().DataPoints().Len() {
						dp := m.Sum().DataPoints().At(d)
						got = append(got, dp.Attributes().AsRaw())
						total += dp.IntValue()
					}
				}
			}
		}
	}
	require.Len(t, got, 1, "the filtered address is not counted")
	assert.Equal(t, int64(5), total)
	assert.Equal(t, "refused", got[0]["tcp.close.cause"])
	assert.Equal(t, "inbound", got[0]["direction"])
	assert.Equal(t, "unknown", got[0]["peer.workload"])
}

// TestRTTSampledAtEachReport: the tcp.rtt histogram (otel) takes a live
// connection's smoothed RTT at every report walk, not only at its close,
// and every update record carries the smoothed and minimum RTT.
func TestRTTSampledAtEachReport(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 50 * time.Millisecond
	cfg.Logs.Update = true

	recs := fixedRecords()
	open := recs[0] // outbound open of connection 1
	live := open
	live.Kind, live.OldState, live.NewState = bpf.KindUpdate, bpf.StateEstablished, bpf.StateEstablished
	live.SRTT, live.RTTMin, live.BytesSent = 2*time.Millisecond, time.Millisecond, 10

	src := &scriptedSource{}
	src.setLive() // walks on from the start (CanWalk), with nothing open yet
	p := startScriptedSource(t, cfg, src)
	p.src.push(open)
	src.setLive(live)
	target := src.walkCount() + 3
	require.Eventually(t, func() bool { return src.walkCount() >= target }, 5*time.Second, time.Millisecond)
	src.setLive()
	closing := recs[2]
	closing.SRTT = 4 * time.Millisecond
	p.src.push(closing)
	p.shutdown(t)

	var updates int
	forEachLog(p.logs.AllLogs(), func(lr plog.LogRecord) {
		if lr.EventName() != "tcp.connection.update" {
			return
		}
		updates++
		a := lr.Attributes().AsRaw()
		assert.Equal(t, int64(2000), a["tcp.rtt.smoothed_us"])
		assert.Equal(t, int64(1000), a["tcp.rtt.min_us"])
	})
	require.GreaterOrEqual(t, updates, 3)

	var count uint64
	var sum float64
	forEachMetric(p.metrics.AllMetrics()[0], func(m pmetric.Metric) {
		if m.Name() != "tcp.rtt" {
			return
		}
		for i := range m.Histogram().DataPoints().Len() {
			dp := m.Histogram().DataPoints().At(i)
			count += dp.Count()
			sum += dp.Sum()
		}
	})
	assert.Equal(t, uint64(updates+1), count, "one sample per report and one at close")
	assert.InDelta(t, float64(updates)*0.002+0.004, sum, 1e-9)
}

// TestListenCountersPerPod: each namespace's listener counters go to the
// pod its address names, from the start-up walk's values on (a baseline);
// a namespace first seen later counts from zero; one with no address
// names no pod and is left out.
func TestListenCountersPerPod(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 20 * time.Millisecond
	srv := netip.MustParseAddr("10.1.0.1") // checkout in the fixture's resolver
	src := &scriptedSource{listen: []bpf.ListenStats{{NetNS: 1, Local: srv, Overflows: 100, Drops: 150}}}
	src.setLive() // report walks, no connection
	p := startScriptedSource(t, cfg, src, fixedResolver())
	waitWalks := func(n int) {
		t.Helper()
		target := src.walkCount() + n
		require.Eventually(t, func() bool { return src.walkCount() >= target }, 5*time.Second, time.Millisecond)
	}
	waitWalks(2)
	src.mu.Lock()
	src.listen = []bpf.ListenStats{
		{NetNS: 1, Local: srv, Overflows: 103, Drops: 155},
		{NetNS: 2, Local: netip.MustParseAddr("10.1.0.2"), Overflows: 4, Drops: 4}, // a pod started since
		{NetNS: 3, Overflows: 9, Drops: 9},                                         // no address
	}
	src.mu.Unlock()
	waitWalks(2)
	p.shutdown(t)

	md := p.metrics.AllMetrics()[0]
	assert.Equal(t, int64(3+4), findSum(t, md, "system.network.tcp.accept_queue.overflows"))
	assert.Equal(t, int64(5+4), findSum(t, md, "system.network.tcp.listen.drops"))
	assert.Equal(t, int64(3), sumForResource(md, "system.network.tcp.accept_queue.overflows", "k8s.pod.name", "checkout-5d8f-xyz12"))
}

// TestBacklogsPerPodAndPort: each walk's listening sockets give their
// pod's system.network.tcp.accept_queue.size and .limit per server.port
// (sockets of one pod and port added up), also for a pod with no series;
// a listener whose address names no pod is left out.
func TestBacklogsPerPodAndPort(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 20 * time.Millisecond
	srv := netip.MustParseAddr("10.1.0.1") // checkout in the fixture's resolver
	src := &scriptedSource{backlogs: []bpf.Backlog{
		{NetNS: 1, Local: srv, Port: 8080, Queued: 3, Limit: 128},
		{NetNS: 1, Local: srv, Port: 8080, Queued: 1, Limit: 128}, // its IPv6 socket
		{NetNS: 1, Local: srv, Port: 9090, Queued: 0, Limit: 4096},
		{NetNS: 9, Local: netip.IPv4Unspecified(), Port: 22, Queued: 5, Limit: 5},
	}}
	src.setLive()
	p := startScriptedSource(t, cfg, src, fixedResolver())
	target := src.walkCount() + 2
	require.Eventually(t, func() bool { return src.walkCount() >= target }, 5*time.Second, time.Millisecond)
	p.shutdown(t)

	md := p.metrics.AllMetrics()[0]
	type point struct {
		pod  string
		port int64
	}
	got := map[string]map[point]int64{}
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		pod, _ := rms.At(i).Resource().Attributes().Get("k8s.pod.name")
		forEachMetric(pmetricOf(rms.At(i)), func(m pmetric.Metric) {
			if m.Type() != pmetric.MetricTypeGauge {
				return
			}
			for d := range m.Gauge().DataPoints().Len() {
				dp := m.Gauge().DataPoints().At(d)
				port, _ := dp.Attributes().Get("server.port")
				if got[m.Name()] == nil {
					got[m.Name()] = map[point]int64{}
				}
				got[m.Name()][point{pod.Str(), port.Int()}] += dp.IntValue()
			}
		})
	}
	pod := "checkout-5d8f-xyz12"
	assert.Equal(t, map[point]int64{{pod, 8080}: 4, {pod, 9090}: 0}, got["system.network.tcp.accept_queue.size"])
	assert.Equal(t, map[point]int64{{pod, 8080}: 256, {pod, 9090}: 4096}, got["system.network.tcp.accept_queue.limit"])
}

func pmetricOf(rm pmetric.ResourceMetrics) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm.CopyTo(md.ResourceMetrics().AppendEmpty())
	return md
}
