//go:build linux

package natlookup_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/natlookup"
)

// This package's kernel tests use 10.206.250.0/24 (10.206.0.0/16 is the
// NAT tests' range).
var (
	clusterIP = netip.MustParseAddr("10.206.250.200")
	prefix    = [3]byte{10, 206, 250}
)

// routedService is a node routing two pods, a client and a server, and a
// ClusterIP the node translates to the server as kube-proxy does.
func routedService(t testing.TB) (*netnstest.Routed, netip.AddrPort) {
	r := netnstest.NewRouted(t, prefix, 2)
	backend := netip.AddrPortFrom(r.PodIPs[1], 8080)
	r.KubeProxyService(t, "NATLOOKUP", clusterIP, 80, backend)
	return r, backend
}

// dialService connects the client pod to the ClusterIP and returns the
// connection's two ends as the client's socket sees them.
func dialService(t testing.TB, r *netnstest.Routed) (net.Conn, netip.AddrPort, netip.AddrPort) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.Pods[0].Dial(ctx, netip.AddrPortFrom(clusterIP, 80).String())
	require.NoError(t, err)
	return c, c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
}

func listen(t testing.TB, r *netnstest.Routed, backend netip.AddrPort) {
	l, err := r.Pods[1].Listen(backend.String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
}

// The node's conntrack table names the backend a ClusterIP connection
// reached; an untranslated connection and an unknown one are not found.
func TestReachedThroughKubeProxyDNAT(t *testing.T) {
	r, backend := routedService(t)
	listen(t, r, backend)
	c, local, dialled := dialService(t, r)
	defer c.Close()
	require.Equal(t, netip.AddrPortFrom(clusterIP, 80), dialled, "the socket keeps the address dialled")

	ct, err := natlookup.Open(r.NodePath())
	require.NoError(t, err)
	defer ct.Close()
	got, ok, err := ct.Reached(local, dialled)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, backend, got)

	// Connected straight to the backend: tracked, not translated.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := r.Pods[0].Dial(ctx, backend.String())
	require.NoError(t, err)
	defer d.Close()
	_, ok, err = ct.Reached(d.LocalAddr().(*net.TCPAddr).AddrPort(), backend)
	require.NoError(t, err)
	assert.False(t, ok, "an untranslated connection has no other destination")

	_, ok, err = ct.Reached(netip.MustParseAddrPort("10.206.250.99:1"), dialled)
	require.NoError(t, err)
	assert.False(t, ok, "no entry: not found, no error")

	// The pod's own namespace did no NAT: its table (if any) knows nothing.
	own, err := natlookup.Open("/run/netns/" + r.Pods[0].Name)
	require.NoError(t, err)
	defer own.Close()
	_, ok, err = own.Reached(local, dialled)
	require.NoError(t, err)
	assert.False(t, ok)
}

func TestOpenMissingNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	_, err := natlookup.Open("/run/netns/tcpconn-does-not-exist")
	require.ErrorContains(t, err, "conntrack: open network namespace")
}

// BenchmarkReached is the cost of the lookup the connection table makes
// once per connection to a Service address: one ctnetlink GET.
func BenchmarkReached(b *testing.B) {
	r, backend := routedService(b)
	listen(b, r, backend)
	c, local, dialled := dialService(b, r)
	defer c.Close()
	ct, err := natlookup.Open(r.NodePath())
	require.NoError(b, err)
	defer ct.Close()
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := ct.Reached(local, dialled); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		miss := netip.MustParseAddrPort("10.206.250.99:1")
		for b.Loop() {
			if _, ok, err := ct.Reached(miss, dialled); ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}
