package tcpconnreceiver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

// TestAdoptedConnectionsKeepTheirDirection: both ends of a connection that
// opened before the receiver are adopted by the start-up walk. The server
// end's port is listening in its namespace: inbound; the client end's is
// an ephemeral port nothing listens on: outbound. So the istio profile
// reports the server end as reporter=destination with the client as the
// source, instead of turning it around, and the direction stays through
// later reports and the close.
func TestAdoptedConnectionsKeepTheirDirection(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 100 * time.Millisecond
	cfg.Profile = ProfileIstio

	recs := fixedRecords()
	adopt := func(r bpf.Record, id uint64, localPort, peerPort uint16) bpf.Record {
		r.Kind, r.ConnID, r.Start, r.Direction, r.PID = bpf.KindUpdate, id, time.Time{}, bpf.DirectionUnknown, 0
		r.OldState, r.NewState, r.BytesSent, r.BytesReceived = bpf.StateEstablished, bpf.StateEstablished, 10, 20
		r.LocalPort, r.PeerPort = localPort, peerPort
		return r
	}
	server := adopt(recs[1], 201, 8080, 45000) // checkout's end
	server.BytesSent, server.BytesReceived = 20, 10
	client := adopt(recs[0], 202, 45000, 8080) // frontend's end
	src := &scriptedSource{listeners: &bpf.Listeners{EphemeralLo: 32768, EphemeralHi: 60999}}
	src.listeners.Add(netip.MustParseAddrPort("0.0.0.0:8080"))
	src.setLive(server, client)
	p := startScriptedSource(t, cfg, src, fixedResolver())
	waitWalks := func(n int) {
		t.Helper()
		target := src.walkCount() + n
		require.Eventually(t, func() bool { return src.walkCount() >= target }, 5*time.Second, time.Millisecond)
	}
	waitWalks(2)
	// After the start the client sent 100 bytes more, the server 200.
	for _, r := range []bpf.Record{server, client} {
		r.Kind, r.OldState, r.NewState = bpf.KindClose, bpf.StateFinWait2, bpf.StateClose
		if r.ConnID == server.ConnID {
			r.BytesSent, r.BytesReceived = 220, 110
		} else {
			r.BytesSent, r.BytesReceived = 110, 220
		}
		src.push(r)
	}
	src.setLive()
	waitWalks(1)
	p.shutdown(t)

	md := p.metrics.AllMetrics()[0]
	for _, reporter := range []string{"source", "destination"} {
		want := map[string]string{"reporter": reporter, "source_workload": "frontend", "destination_workload": "checkout"}
		assert.Equal(t, int64(1), sumWhereAll(md, "istio_tcp_connections_closed", want), reporter)
		assert.Equal(t, int64(100), sumWhereAll(md, "istio_tcp_received_bytes", want), "%s: what the client sent after the start", reporter)
		assert.Equal(t, int64(200), sumWhereAll(md, "istio_tcp_sent_bytes", want), "%s: what the server sent after the start", reporter)
		assert.Zero(t, sumWhereAll(md, "istio_tcp_connections_opened", map[string]string{"reporter": reporter}), "adopted: not opened")
	}
	assert.Zero(t, sumWhereAll(md, "istio_tcp_connections_closed", map[string]string{"source_workload": "checkout"}), "never turned around")

	dirs := map[uint16]string{}
	forEachLog(p.logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		assert.Equal(t, true, a[accesslog.AttrAdopted])
		assert.Equal(t, fixture.ClientAddr.String(), a[accesslog.AttrSourceAddress])
		dirs[uint16(a[accesslog.AttrSourcePort].(int64))] = a[accesslog.AttrDirection].(string)
		if a[accesslog.AttrDirection] == "inbound" {
			assert.Contains(t, lr.Body().Str(), "src.addr=10.1.0.2:45000 src.workload=frontend src.namespace=web dst.addr=10.1.0.1:8080 dst.service=checkout.shop.svc.cluster.local dst.workload=checkout")
		}
	})
	assert.Len(t, dirs, 1, "both ends' close records name the client as the source")
	var kinds []string
	forEachLog(p.logs.AllLogs(), func(lr plog.LogRecord) {
		kinds = append(kinds, lr.Attributes().AsRaw()[accesslog.AttrDirection].(string))
	})
	assert.ElementsMatch(t, []string{"inbound", "outbound"}, kinds)
}
