package accesslog

import (
	"net/netip"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/plogtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

// A connection the node translated: the destination is the backend reached
// (the record as the connection table rewrote it), and the address dialled
// is kept beside it.
func TestTranslatedDestinationKeepsTheDialledAddress(t *testing.T) {
	res := fixedResolver()
	rec := fixedRecords()[2] // outbound close; peer already the backend
	o := conntable.Observation{
		Local:   res[netip.AddrPortFrom(fixture.ClientAddr, 0)],
		Peer:    res[netip.AddrPortFrom(fixture.ServerAddr, 8080)],
		Dialled: netip.MustParseAddrPort("10.96.0.10:80"),
	}
	lr := plog.NewLogRecord()
	var c Converter
	c.Fill(lr, &rec, &o, t0)
	a := lr.Attributes().AsRaw()
	assert.Equal(t, "10.1.0.1", a[AttrDestAddress])
	assert.Equal(t, int64(8080), a[AttrDestPort])
	assert.Equal(t, "10.1.0.1", a[AttrPeerAddress])
	assert.Equal(t, "10.96.0.10", a[AttrDialledAddress])
	assert.Equal(t, int64(80), a[AttrDialledPort])
	assert.Equal(t, "checkout", a["destination.workload.name"])
	assert.Contains(t, lr.Body().Str(), "dst.addr=10.1.0.1:8080 dst.dialled=10.96.0.10:80 dst.service=checkout.shop.svc.cluster.local dst.workload=checkout")

	o.Dialled = netip.AddrPort{}
	lr = plog.NewLogRecord()
	c.Fill(lr, &rec, &o, t0)
	assert.NotContains(t, lr.Attributes().AsRaw(), AttrDialledAddress)
	assert.NotContains(t, lr.Body().Str(), "dialled")
}

// Both ends' node and zone are on the record when known, and left out
// when not.
func TestEndsCarryNodeAndZone(t *testing.T) {
	res := fixedResolver()
	rec := fixedRecords()[2] // outbound: the local end is the source
	local := *res[netip.AddrPortFrom(fixture.ClientAddr, 0)]
	peer := *res[netip.AddrPortFrom(fixture.ServerAddr, 8080)]
	local.Node, local.Zone = "node-a", "zone-a"
	peer.Node, peer.Zone = "node-b", "zone-b"
	o := conntable.Observation{Local: &local, Peer: &peer}
	lr := plog.NewLogRecord()
	var c Converter
	c.Fill(lr, &rec, &o, t0)
	a := lr.Attributes().AsRaw()
	assert.Equal(t, "node-a", a["source.k8s.node.name"])
	assert.Equal(t, "zone-a", a["source.cloud.availability_zone"])
	assert.Equal(t, "node-b", a["destination.k8s.node.name"])
	assert.Equal(t, "zone-b", a["destination.cloud.availability_zone"])

	peer.Zone = ""
	lr = plog.NewLogRecord()
	c.Fill(lr, &rec, &o, t0)
	assert.NotContains(t, lr.Attributes().AsRaw(), "destination.cloud.availability_zone")
}

// With logs.body: none a record has no body and every other field as
// with the line, attributes in the same order: the line only repeats them.
func TestBodyNone(t *testing.T) {
	recs, obs := exactCases()
	batches := func(body string) plog.LogRecordSlice {
		cfg := DefaultConfig()
		cfg.Body = body
		b := NewBatcher(cfg, pcommon.NewResource())
		for i := range recs {
			b.Add(&recs[i], &obs[i], t0)
		}
		b.Close()
		out := plog.NewLogRecordSlice()
		for ld := range b.Queue() {
			ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().MoveAndAppendTo(out)
		}
		return out
	}
	line, none := batches(BodyLine), batches(BodyNone)
	require.Equal(t, len(recs), none.Len())
	require.Equal(t, line.Len(), none.Len())
	for i := range none.Len() {
		withLine, without := line.At(i), none.At(i)
		assert.Equal(t, pcommon.ValueTypeEmpty, without.Body().Type())
		assert.Contains(t, withLine.Body().Str(), "src.addr=")
		assert.Equal(t, keys(withLine.Attributes()), keys(without.Attributes()))
		require.NoError(t, withLine.Body().FromRaw(nil))
		assert.NoError(t, plogtest.CompareLogRecord(withLine, without))
	}
}

func keys(m pcommon.Map) []string {
	var k []string
	for key := range m.All() {
		k = append(k, key)
	}
	return k
}
