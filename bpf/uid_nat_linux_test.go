package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// natHop is a client and a server namespace joined through a router
// namespace that DNATs a virtual address to the server and SNATs
// (masquerades) the client behind its own address: 10.205.251.0/24 on the
// client's side, 10.205.252.0/24 on the server's (NewPair never reaches
// those subnets); the virtual address is 10.205.253.100.
type natHop struct {
	client, server     *netnstest.NS
	clientIP, serverIP netip.Addr
	routerIP           netip.Addr // the client's address as the server sees it
	virtual            netip.AddrPort
	serverPort         uint16
}

func newNATHop(t *testing.T) *natHop {
	t.Helper()
	netnstest.RequireRoot(t)
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		require.NoError(t, err, "%s: %s", strings.Join(args, " "), out)
	}
	ns := func(name string) *netnstest.NS {
		run("ip", "netns", "add", name)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		n, err := netnstest.Attach(name)
		require.NoError(t, err)
		t.Cleanup(func() { n.Close() })
		return n
	}
	in := func(n string, args ...string) { run(append([]string{"ip", "netns", "exec", n}, args...)...) }
	c, r, s := "tnc"+tag, "tnr"+tag, "tns"+tag
	h := &natHop{
		client: ns(c), server: ns(s),
		clientIP: netip.MustParseAddr("10.205.251.2"), serverIP: netip.MustParseAddr("10.205.252.2"),
		routerIP: netip.MustParseAddr("10.205.252.1"),
		virtual:  netip.MustParseAddrPort("10.205.253.100:80"), serverPort: 9400,
	}
	ns(r)
	run("ip", "link", "add", "nc"+tag, "netns", c, "type", "veth", "peer", "name", "nrc"+tag, "netns", r)
	run("ip", "link", "add", "ns"+tag, "netns", s, "type", "veth", "peer", "name", "nrs"+tag, "netns", r)
	in(c, "ip", "addr", "add", "10.205.251.2/24", "dev", "nc"+tag)
	in(r, "ip", "addr", "add", "10.205.251.1/24", "dev", "nrc"+tag)
	in(r, "ip", "addr", "add", "10.205.252.1/24", "dev", "nrs"+tag)
	in(s, "ip", "addr", "add", "10.205.252.2/24", "dev", "ns"+tag)
	for _, l := range [][2]string{{c, "nc" + tag}, {r, "nrc" + tag}, {r, "nrs" + tag}, {s, "ns" + tag}, {c, "lo"}, {r, "lo"}, {s, "lo"}} {
		in(l[0], "ip", "link", "set", l[1], "up")
	}
	in(c, "ip", "route", "add", "default", "via", "10.205.251.1")
	in(r, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	in(r, "iptables", "-t", "nat", "-A", "PREROUTING", "-d", h.virtual.Addr().String(), "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", h.serverIP, h.serverPort))
	// A port of its own too, so that neither addresses nor ports match.
	in(r, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "nrs"+tag, "-p", "tcp",
		"-j", "SNAT", "--to-source", h.routerIP.String()+":20000-29999")
	return h
}

// TestConnectionUIDThroughNAT: through a DNAT and an SNAT hop the two ends
// see different addresses and ports for one connection, and the same UID.
func TestConnectionUIDThroughNAT(t *testing.T) {
	const conns = 20
	h := newNATHop(t)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	col := collect(p, func(r *Record) bool {
		return r.Kind == KindOpen && (r.LocalAddr == h.clientIP || r.LocalAddr == h.serverIP)
	})
	l, err := h.server.Listen(netip.AddrPortFrom(h.serverIP, h.serverPort).String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })

	type pairOfPorts struct{ client, server uint16 }
	var seen []pairOfPorts
	for range conns {
		c, err := h.client.Dial(t.Context(), h.virtual.String())
		require.NoError(t, err)
		s, err := l.Accept()
		require.NoError(t, err)
		seen = append(seen, pairOfPorts{uint16(c.LocalAddr().(*net.TCPAddr).Port), uint16(s.RemoteAddr().(*net.TCPAddr).Port)})
		assert.Equal(t, h.routerIP.String(), s.RemoteAddr().(*net.TCPAddr).IP.String(), "the server sees the router")
		c.Close()
		s.Close()
	}
	recs := col.waitFor(t, "both opens of every connection", func(rs []Record) bool { return len(rs) >= 2*conns })
	uids := map[uint64]bool{}
	for _, pp := range seen {
		var cl, sv *Record
		for i := range recs {
			r := &recs[i]
			switch {
			case r.LocalAddr == h.clientIP && r.LocalPort == pp.client:
				cl = r
			case r.LocalAddr == h.serverIP && r.PeerPort == pp.server:
				sv = r
			}
		}
		require.NotNil(t, cl, "client open of port %d", pp.client)
		require.NotNil(t, sv, "server open of port %d", pp.server)
		assert.Equal(t, h.virtual, netip.AddrPortFrom(cl.PeerAddr, cl.PeerPort), "the client sees the virtual address")
		assert.Equal(t, h.routerIP, sv.PeerAddr)
		assert.NotEqual(t, pp.client, pp.server, "SNAT changed the port")
		cu, ok1 := cl.UID()
		su, ok2 := sv.UID()
		require.True(t, ok1 && ok2)
		assert.Equal(t, cu, su, "one UID on both ends of %d -> %d", pp.client, pp.server)
		uids[cu] = true
	}
	assert.Len(t, uids, conns, "distinct")
}
