package conntable

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

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
