package conntable

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
)

// countingResolver answers from a swappable map and counts calls.
type countingResolver struct {
	ids   atomic.Pointer[staticResolver]
	calls atomic.Int64
}

func (c *countingResolver) Resolve(addr netip.Addr, port uint16, at time.Time, role identity.Role) *identity.Identity {
	c.calls.Add(1)
	return (*c.ids.Load()).Resolve(addr, port, at, role)
}

func TestIdentityResolvedOncePerConnection(t *testing.T) {
	res := &countingResolver{}
	known := fixedResolver()
	res.ids.Store(&known)
	tr := New(res, true, false)
	recs := fixedRecords()
	open, closeRec := recs[0], recs[2] // outbound open and close of connection 1

	o, _ := tr.Observe(&open)
	assert.Equal(t, "frontend", o.Local.Workload)
	assert.Equal(t, "checkout.shop.svc.cluster.local", o.Peer.Service)
	assert.Equal(t, int64(2), res.calls.Load())

	// The pods change (the server pod is gone from the resolver): the
	// connection keeps what it was resolved to at open.
	empty := staticResolver{}
	res.ids.Store(&empty)
	o, _ = tr.Observe(&closeRec)
	assert.Equal(t, "frontend", o.Local.Workload)
	assert.Equal(t, "checkout", o.Peer.Workload)
	assert.Equal(t, int64(2), res.calls.Load(), "no lookup at close")
	assert.Zero(t, tr.Len(), "closed connections leave the table")
}

func TestUnresolvedEndIsRetried(t *testing.T) {
	res := &countingResolver{}
	empty := staticResolver{}
	res.ids.Store(&empty)
	tr := New(res, true, false)
	recs := fixedRecords()
	o, _ := tr.Observe(&recs[0])
	assert.Empty(t, o.Local.Workload)

	known := fixedResolver()
	res.ids.Store(&known) // the informer caught up
	o, _ = tr.Observe(&recs[2])
	assert.Equal(t, "frontend", o.Local.Workload)
	assert.Equal(t, "checkout", o.Peer.Workload)
}

// byNetNS names the pod of one network namespace.
type byNetNS struct {
	netns uint64
	id    *identity.Identity
}

func (b byNetNS) ResolveLocal(netns uint64, _ netip.Addr, _ uint16, _ time.Time, _ identity.Role) *identity.Identity {
	if netns == b.netns {
		return b.id
	}
	return nil
}

// The local end comes from its socket's network namespace when that is
// known, whoever the address now belongs to; from the address otherwise.
// The peer is always resolved by address.
func TestLocalEndByNetNS(t *testing.T) {
	tr := New(fixedResolver(), true, false)
	batch := &identity.Identity{Pod: "export-1", Workload: "export", WorkloadKind: "Job"}
	tr.SetLocal(byNetNS{netns: 4026532001, id: batch})
	recs := fixedRecords()
	open := recs[0]
	open.NetNS = 4026532001
	o, _ := tr.Observe(&open)
	assert.Equal(t, "export", o.Local.Workload, "the namespace's pod, not the address's")
	assert.Equal(t, "checkout", o.Peer.Workload)

	tr = New(fixedResolver(), true, false)
	tr.SetLocal(byNetNS{netns: 4026532001, id: batch})
	open.NetNS = 4026532002 // a namespace nobody knows
	o, _ = tr.Observe(&open)
	assert.Equal(t, "frontend", o.Local.Workload, "unknown namespace: the address")
}

// A peer the resolver does not know (a pod whose address the API server
// has not published yet) is named by the other socket of the connection
// when that socket is on this node and its own end is named by its
// namespace; a socket at that address whose peer is someone else is not
// the other end.
func TestPeerByTheOtherSocketOnTheNode(t *testing.T) {
	tr := New(nobody{}, true, false)
	batch := &identity.Identity{Pod: "export-1", Workload: "export", WorkloadKind: "Job"}
	tr.SetLocal(byNetNS{netns: 4026532001, id: batch})
	client, server := netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.9.0.1")
	o, keep := tr.Observe(&bpf.Record{Kind: bpf.KindOpen, ConnID: 1, NetNS: 4026532001, Direction: bpf.DirectionOutbound, Time: t0,
		LocalAddr: client, LocalPort: 40000, PeerAddr: server, PeerPort: 8080})
	require.True(t, keep)
	assert.Equal(t, "export", o.Local.Workload)

	o, keep = tr.Observe(&bpf.Record{Kind: bpf.KindOpen, ConnID: 2, NetNS: 4026532002, Direction: bpf.DirectionInbound, Time: t0,
		LocalAddr: server, LocalPort: 8080, PeerAddr: client, PeerPort: 40000})
	require.True(t, keep)
	assert.Equal(t, "export", o.Peer.Workload, "the client's socket names the server's peer")

	o, _ = tr.Observe(&bpf.Record{Kind: bpf.KindOpen, ConnID: 3, NetNS: 4026532002, Direction: bpf.DirectionInbound, Time: t0,
		LocalAddr: server, LocalPort: 9090, PeerAddr: client, PeerPort: 40000})
	assert.Empty(t, o.Peer.Workload, "that socket's peer is another end: not this connection's")

	tr.Observe(&bpf.Record{Kind: bpf.KindClose, ConnID: 1, NetNS: 4026532001, Time: t0.Add(time.Second),
		LocalAddr: client, LocalPort: 40000, PeerAddr: server, PeerPort: 8080})
	o, _ = tr.Observe(&bpf.Record{Kind: bpf.KindOpen, ConnID: 4, NetNS: 4026532002, Direction: bpf.DirectionInbound, Time: t0,
		LocalAddr: server, LocalPort: 8080, PeerAddr: client, PeerPort: 40000})
	assert.Empty(t, o.Peer.Workload, "a closed socket names nobody")
}

// nobody is a resolver that knows no address yet.
type nobody struct{}

func (nobody) Resolve(netip.Addr, uint16, time.Time, identity.Role) *identity.Identity { return nil }
