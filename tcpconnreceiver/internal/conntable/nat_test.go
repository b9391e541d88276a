package conntable

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

var (
	clusterIP = netip.MustParseAddrPort("10.96.0.10:80")
	backend   = netip.AddrPortFrom(fixture.ServerAddr, 8080)
	svc       = &identity.Identity{Service: "web.shop.svc.cluster.local", ServiceName: "web", ServiceNamespace: "shop",
		Namespace: "shop", Cluster: "Kubernetes", Virtual: true}
)

// natResolver is the fixture's resolver plus a Service at clusterIP whose
// backend is the checkout pod.
type natResolver struct {
	staticResolver
	backendCalls int
}

func (r *natResolver) Resolve(addr netip.Addr, port uint16, at time.Time, role identity.Role) *identity.Identity {
	if role == identity.RoleServer && netip.AddrPortFrom(addr, port) == clusterIP {
		return svc
	}
	return r.staticResolver.Resolve(addr, port, at, role)
}

func (r *natResolver) ResolveBackend(service *identity.Identity, addr netip.Addr, port uint16, _ time.Time) *identity.Identity {
	r.backendCalls++
	id := r.staticResolver[netip.AddrPortFrom(addr, 0)]
	if id == nil {
		return nil
	}
	c := *id
	c.Service, c.ServiceName, c.ServiceNamespace = service.Service, service.ServiceName, service.ServiceNamespace
	return &c
}

// fakeNAT answers from a map of (source, dialled) to backend.
type fakeNAT struct {
	to    map[[2]netip.AddrPort]netip.AddrPort
	err   error
	calls int
}

func (f *fakeNAT) Reached(src, dst netip.AddrPort) (netip.AddrPort, bool, error) {
	f.calls++
	if f.err != nil {
		return netip.AddrPort{}, false, f.err
	}
	r, ok := f.to[[2]netip.AddrPort{src, dst}]
	return r, ok, nil
}

// toClusterIP is the fixture's outbound open, update and close records of
// connection 1, dialling the ClusterIP.
func toClusterIP() (open, update, closeRec bpf.Record) {
	recs := fixedRecords()
	open, update, closeRec = recs[0], recs[9], recs[2]
	update.ConnID, update.LocalPort = open.ConnID, open.LocalPort
	for _, r := range []*bpf.Record{&open, &update, &closeRec} {
		r.PeerAddr, r.PeerPort = clusterIP.Addr(), clusterIP.Port()
	}
	return open, update, closeRec
}

func TestTranslatedPeerIsTheBackendWithTheDialledService(t *testing.T) {
	res := &natResolver{staticResolver: fixedResolver()}
	open, update, closeRec := toClusterIP()
	nat := &fakeNAT{to: map[[2]netip.AddrPort]netip.AddrPort{
		{netip.AddrPortFrom(open.LocalAddr, open.LocalPort), clusterIP}: backend,
	}}
	tr := New(res, true, false)
	tr.SetNAT(nat)

	for i, rec := range []*bpf.Record{&open, &update, &closeRec} {
		o, keep := tr.Observe(rec)
		require.True(t, keep)
		assert.Equal(t, clusterIP, o.Dialled, "record %d keeps the address dialled", i)
		assert.Equal(t, backend, netip.AddrPortFrom(rec.PeerAddr, rec.PeerPort), "record %d names the backend reached", i)
		assert.Equal(t, "checkout", o.Peer.Workload)
		assert.Equal(t, "checkout-5d8f-xyz12", o.Peer.Pod)
		assert.Equal(t, "spiffe://cluster.local/ns/shop/sa/checkout", o.Peer.Principal)
		assert.Equal(t, "web.shop.svc.cluster.local", o.Peer.Service, "the Service dialled, not the EndpointSlice's first")
		assert.Equal(t, "frontend", o.Local.Workload)
	}
	assert.Equal(t, 1, nat.calls, "one lookup per connection")
	assert.Equal(t, 1, res.backendCalls)
	lookups, failed, _ := tr.NATStats()
	assert.Equal(t, [2]int64{1, 0}, [2]int64{lookups, failed})
}

func TestNATLookupOnlyForServiceAddresses(t *testing.T) {
	res := &natResolver{staticResolver: fixedResolver()}
	nat := &fakeNAT{}
	tr := New(res, true, false)
	tr.SetNAT(nat)
	recs := fixedRecords()
	for i := range recs {
		o, _ := tr.Observe(&recs[i])
		assert.False(t, o.Dialled.IsValid())
	}
	assert.Zero(t, nat.calls, "pod and unknown destinations, inbound connections: no lookup")
}

// A Service address conntrack does not know (or a failing lookup) leaves
// the peer as the Service, asked once; the failure is counted.
func TestUntranslatedServiceKeepsTheService(t *testing.T) {
	for _, nat := range []*fakeNAT{{}, {err: errors.New("ctnetlink: permission denied")}} {
		res := &natResolver{staticResolver: fixedResolver()}
		tr := New(res, true, false)
		tr.SetNAT(nat)
		open, update, closeRec := toClusterIP()
		for _, rec := range []*bpf.Record{&open, &update, &closeRec} {
			o, _ := tr.Observe(rec)
			assert.False(t, o.Dialled.IsValid())
			assert.Equal(t, clusterIP, netip.AddrPortFrom(rec.PeerAddr, rec.PeerPort))
			assert.Same(t, svc, o.Peer)
		}
		assert.Equal(t, 1, nat.calls)
		_, failed, last := tr.NATStats()
		if nat.err != nil {
			assert.Equal(t, int64(1), failed)
			assert.ErrorContains(t, last, "permission denied")
		} else {
			assert.Zero(t, failed)
		}
	}
}

// The API server had not answered at the open: the peer is looked up again
// at the next record, and translated then.
func TestTranslatedOnceResolved(t *testing.T) {
	res := &natResolver{staticResolver: staticResolver{}}
	open, update, _ := toClusterIP()
	nat := &fakeNAT{to: map[[2]netip.AddrPort]netip.AddrPort{{netip.AddrPortFrom(open.LocalAddr, open.LocalPort), clusterIP}: backend}}
	tr := New(&unsynced{res}, true, false)
	tr.SetNAT(nat)
	o, _ := tr.Observe(&open)
	assert.False(t, o.Dialled.IsValid())
	assert.Zero(t, nat.calls)
	res.staticResolver = fixedResolver()
	tr.backends = res
	o, _ = tr.Observe(&update)
	assert.Equal(t, clusterIP, o.Dialled)
	assert.Equal(t, "checkout", o.Peer.Workload)
}

// unsynced answers nil for the Service until its resolver knows pods.
type unsynced struct{ r *natResolver }

func (u *unsynced) Resolve(addr netip.Addr, port uint16, at time.Time, role identity.Role) *identity.Identity {
	if len(u.r.staticResolver) == 0 {
		return nil
	}
	return u.r.Resolve(addr, port, at, role)
}
