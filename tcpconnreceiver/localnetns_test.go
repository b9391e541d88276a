package tcpconnreceiver

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/podnetns"
)

type fakeOwners map[uint64]podnetns.Owner

func (f fakeOwners) Resolve(ino uint64, _ time.Time) (podnetns.Owner, bool) {
	o, ok := f[ino]
	return o, ok
}

type fakePods struct {
	pods  map[string]*identity.Identity
	nodes map[string]*identity.Identity
}

func (f fakePods) ResolvePod(uid string, _ uint16, _ identity.Role) *identity.Identity {
	return f.pods[uid]
}
func (f fakePods) ResolveNode(name string) *identity.Identity { return f.nodes[name] }

type fakeAddrs map[netip.AddrPort]*identity.Identity

func (f fakeAddrs) Resolve(addr netip.Addr, port uint16, _ time.Time, _ identity.Role) *identity.Identity {
	if id := f[netip.AddrPortFrom(addr, port)]; id != nil {
		return id
	}
	return f[netip.AddrPortFrom(addr, 0)]
}

// The pod's namespace names the pod; the node's namespace names the node,
// or the host-network pod declaring the port, never a pod that holds the
// address in the API; an unknown namespace leaves the address rule.
func TestLocalByNetNSRules(t *testing.T) {
	job := &identity.Identity{Pod: "export-1"}
	node := &identity.Identity{Node: "node-a", Workload: "node-a", WorkloadKind: "Node", HostNetwork: true}
	exporter := &identity.Identity{Pod: "exporter", HostNetwork: true}
	stale := &identity.Identity{Pod: "stale-pod"} // the API says a pod has the node's loopback: not the node's namespace
	ip := netip.MustParseAddr("10.0.0.5")
	l := &localByNetNS{
		owners: fakeOwners{1: {PodUID: "uid-job"}, 2: {Host: true}},
		pods:   fakePods{pods: map[string]*identity.Identity{"uid-job": job}, nodes: map[string]*identity.Identity{"node-a": node}},
		addrs: fakeAddrs{netip.AddrPortFrom(ip, 9100): exporter, netip.AddrPortFrom(ip, 0): node,
			netip.MustParseAddrPort("127.0.0.1:0"): stale},
		node: "node-a",
	}
	now := time.Now()
	assert.Same(t, job, l.ResolveLocal(1, ip, 40000, now, identity.RoleClient))
	assert.Same(t, exporter, l.ResolveLocal(2, ip, 9100, now, identity.RoleServer))
	assert.Same(t, node, l.ResolveLocal(2, ip, 40000, now, identity.RoleClient))
	assert.Same(t, node, l.ResolveLocal(2, netip.MustParseAddr("127.0.0.1"), 40000, now, identity.RoleClient))
	assert.Same(t, node, l.ResolveLocal(2, netip.MustParseAddr("192.0.2.1"), 40000, now, identity.RoleClient))
	assert.Nil(t, l.ResolveLocal(3, ip, 40000, now, identity.RoleClient))
	l.node = ""
	assert.Nil(t, l.ResolveLocal(2, netip.MustParseAddr("192.0.2.1"), 40000, now, identity.RoleClient), "no node name: the address rule")
}
