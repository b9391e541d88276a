package kube

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/internal/kubetest"
)

// TestLocalNodeAddresses: an address of the node's own interfaces that
// its Node object does not list (a CNI bridge's, whence kubelet probes
// the pods) resolves to the node, as a client and as a server, once
// given; the next call replaces the set. Loopback, another node's, a
// pod's and a Service's addresses keep their meaning.
func TestLocalNodeAddresses(t *testing.T) {
	srv := kubetest.Start(t)
	client := srv.Client(t)
	obj := kubetest.Objects{TB: t, Client: client}
	obj.Namespace("shop")
	obj.Node("node-a", "198.51.100.240")
	obj.Node("node-b", "198.51.100.241")
	web := obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "web-1", Node: "node-a", IP: "198.51.100.242"})
	clusterIP := netip.MustParseAddr(obj.Service("shop", "web", "", 80, 8080, web))

	r := New(client, DefaultConfig(), Options{Debounce: 5 * time.Millisecond})
	r.Start()
	defer r.Stop()
	resolve := func(ip netip.Addr, role identity.Role) *identity.Identity {
		return r.Resolve(ip, 8080, time.Now(), role)
	}
	bridge, nodeB, pod := netip.MustParseAddr("198.51.100.243"), netip.MustParseAddr("198.51.100.241"), netip.MustParseAddr("198.51.100.242")
	require.Eventually(t, func() bool {
		id := resolve(clusterIP, identity.RoleServer)
		return id != nil && id.Virtual && r.ResolveNode("node-a") != nil
	}, 30*time.Second, 10*time.Millisecond, "resolver never indexed the objects")
	assert.Nil(t, resolve(bridge, identity.RoleClient), "not the node's before it is told")

	loopback, loopback6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	r.SetLocalNodeAddresses("node-a", []netip.Addr{bridge, loopback, loopback6, nodeB, pod, clusterIP})
	// Each index build makes the node's identity anew: the one of the
	// same build.
	isNode := func(id *identity.Identity) bool { return id != nil && id == r.ResolveNode("node-a") }
	require.Eventually(t, func() bool { return isNode(resolve(bridge, identity.RoleClient)) }, 10*time.Second, 5*time.Millisecond,
		"the bridge's address never named the node")
	assert.True(t, isNode(resolve(bridge, identity.RoleServer)))
	assert.Nil(t, resolve(loopback, identity.RoleClient), "loopback is every namespace's own")
	assert.Nil(t, resolve(loopback6, identity.RoleClient))
	assert.Equal(t, "node-b", resolve(nodeB, identity.RoleClient).Node, "another node's address in the API")
	assert.Equal(t, "web-1", resolve(pod, identity.RoleClient).Pod, "a pod's address")
	assert.True(t, resolve(clusterIP, identity.RoleServer).Virtual, "a ClusterIP the node holds (IPVS) is the Service's")

	// The same set again changes nothing; the next set replaces it.
	r.SetLocalNodeAddresses("node-a", []netip.Addr{clusterIP, bridge})
	assert.True(t, isNode(resolve(bridge, identity.RoleClient)))
	other := netip.MustParseAddr("198.51.100.244")
	r.SetLocalNodeAddresses("node-a", []netip.Addr{other})
	require.Eventually(t, func() bool { return resolve(bridge, identity.RoleClient) == nil }, 10*time.Second, 5*time.Millisecond,
		"an address the node no longer holds still names it")
	assert.True(t, isNode(resolve(other, identity.RoleClient)))

	// A node the API does not know names nobody.
	r.SetLocalNodeAddresses("node-z", []netip.Addr{other})
	require.Eventually(t, func() bool { return resolve(other, identity.RoleClient) == nil }, 10*time.Second, 5*time.Millisecond)
}
