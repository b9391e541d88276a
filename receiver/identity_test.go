package receiver

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

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
	ids := newIdentities(res)
	recs := fixedRecords()
	open, closeRec := recs[0], recs[2] // outbound open and close of connection 1

	local, peer := ids.ends(&open)
	assert.Equal(t, "frontend", local.Workload)
	assert.Equal(t, "checkout.shop.svc.cluster.local", peer.Service)
	assert.Equal(t, int64(2), res.calls.Load())

	// The pods change (the server pod is gone from the resolver): the
	// connection keeps what it was resolved to at open.
	empty := staticResolver{}
	res.ids.Store(&empty)
	local, peer = ids.ends(&closeRec)
	assert.Equal(t, "frontend", local.Workload)
	assert.Equal(t, "checkout", peer.Workload)
	assert.Equal(t, int64(2), res.calls.Load(), "no lookup at close")
	assert.Empty(t, ids.conns, "closed connections leave the cache")
}

func TestUnresolvedEndIsRetried(t *testing.T) {
	res := &countingResolver{}
	empty := staticResolver{}
	res.ids.Store(&empty)
	ids := newIdentities(res)
	recs := fixedRecords()
	local, _ := ids.ends(&recs[0])
	assert.Empty(t, local.Workload)

	known := fixedResolver()
	res.ids.Store(&known) // the informer caught up
	local, peer := ids.ends(&recs[2])
	assert.Equal(t, "frontend", local.Workload)
	assert.Equal(t, "checkout", peer.Workload)
}

func TestAddressOnlyNeedsNoCache(t *testing.T) {
	ids := newIdentities(identity.AddressOnly{})
	rec := bpf.Record{Kind: bpf.KindOpen, ConnID: 1}
	local, peer := ids.ends(&rec)
	assert.Empty(t, local.Workload)
	assert.Empty(t, peer.Workload)
	assert.Empty(t, ids.conns)
}
