package tcpconnreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

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
