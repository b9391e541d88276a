package accesslog

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
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
