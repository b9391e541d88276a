package tcpconnreceiver

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

var (
	shopClusterIP = netip.MustParseAddrPort("10.96.0.10:80")
	shopBackend   = netip.AddrPortFrom(fixture.ServerAddr, 8080)
	shopService   = &identity.Identity{Service: "checkout.shop.svc.cluster.local", ServiceName: "checkout", ServiceNamespace: "shop",
		Namespace: "shop", Cluster: "Kubernetes", Virtual: true}
)

// clusterIPResolver is the fixture's, plus the checkout Service's ClusterIP.
type clusterIPResolver struct{ fixture.StaticResolver }

func (r clusterIPResolver) Resolve(addr netip.Addr, port uint16, at time.Time, role identity.Role) *identity.Identity {
	if role == identity.RoleServer && netip.AddrPortFrom(addr, port) == shopClusterIP {
		return shopService
	}
	return r.StaticResolver.Resolve(addr, port, at, role)
}

func (r clusterIPResolver) ResolveBackend(_ *identity.Identity, addr netip.Addr, port uint16, at time.Time) *identity.Identity {
	id := *r.StaticResolver.Resolve(addr, port, at, identity.RoleServer)
	id.PodIP = addr.String()
	return &id
}

type toBackend struct{}

func (toBackend) Reached(_, dst netip.AddrPort) (netip.AddrPort, bool, error) {
	return shopBackend, dst == shopClusterIP, nil
}

// TestClusterIPSeriesPerProfile: the client side of a connection to a
// ClusterIP, without and with the conntrack lookup, in each profile: the
// lookup fills the destination workload, and keeps the Service.
func TestClusterIPSeriesPerProfile(t *testing.T) {
	recs := fixedRecords()
	open, closeRec := recs[0], recs[2]
	for _, r := range []*bpf.Record{&open, &closeRec} {
		r.PeerAddr, r.PeerPort = shopClusterIP.Addr(), shopClusterIP.Port()
	}
	want := map[string][2]map[string]string{ // profile -> {before, after} labels of the client side
		ProfileOTel: {{"peer.workload": "unknown", "peer.namespace": "shop"}, {"peer.workload": "checkout", "peer.workload.kind": "Deployment", "peer.namespace": "shop"}},
		ProfileIstio: {
			{"reporter": "source", "destination_workload": "unknown", "destination_service": "checkout.shop.svc.cluster.local", "destination_principal": "unknown"},
			{"reporter": "source", "destination_workload": "checkout", "destination_service": "checkout.shop.svc.cluster.local",
				"destination_principal": "spiffe://cluster.local/ns/shop/sa/checkout", "destination_version": "v2"},
		},
		ProfileKmesh: {{"destination_pod_address": "unknown", "destination_workload": "unknown"}, {"destination_pod_address": "10.1.0.1", "destination_pod_name": "checkout-5d8f-xyz12", "destination_workload": "checkout"}},
	}
	for _, name := range []string{ProfileOTel, ProfileIstio, ProfileKmesh} {
		for i, withNAT := range []bool{false, true} {
			cfg := createDefaultConfig()
			cfg.Profile = name
			h := newAggHarness(cfg, clusterIPResolver{fixture.Resolver()})
			if withNAT {
				h.track.SetNAT(toBackend{})
			}
			o, c := open, closeRec
			h.add(o, c)
			md := h.emit(t0.Add(time.Minute))
			metric := map[string]string{ProfileOTel: "tcp.connections.closed", ProfileIstio: "istio_tcp_connections_closed", ProfileKmesh: "kmesh_tcp_workload_connections_closed"}[name]
			assert.Equal(t, int64(1), sumWhereAll(md, metric, want[name][i]), "%s, conntrack lookup %v: %s", name, withNAT, seriesOf(md, metric))
			t.Logf("%s, lookup %v: %s", name, withNAT, seriesOf(md, metric))
		}
	}
}

// seriesOf prints a metric's label sets.
func seriesOf(md pmetric.Metrics, name string) string {
	var out []string
	forEachSumPoint(md, name, func(dp pmetric.NumberDataPoint) {
		var kv []string
		for k, v := range dp.Attributes().All() {
			kv = append(kv, fmt.Sprintf("%s=%q", k, v.AsString()))
		}
		sort.Strings(kv)
		out = append(out, "{"+strings.Join(kv, ",")+"}")
	})
	return strings.Join(out, " ")
}
