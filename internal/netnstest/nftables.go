package netnstest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// KubeProxyNFT writes into the node namespace what kube-proxy's nftables
// mode writes for a ClusterIP service, and its node port when nodePort is
// not 0: a "kube-proxy" table whose services chain (from the dstnat hooks
// of prerouting and output) looks the destination up in a service-ips
// verdict map (and, for local destinations, a service-nodeports map), a
// service chain that picks an endpoint chain with numgen random, and
// endpoint chains that DNAT there. id names the chains.
func (r *Routed) KubeProxyNFT(tb testing.TB, id string, clusterIP netip.Addr, port, nodePort uint16, backends ...netip.AddrPort) {
	tb.Helper()
	svc := "service-" + id + "-tcp"
	var b strings.Builder
	fmt.Fprintf(&b, "table ip kube-proxy {\n")
	fmt.Fprintf(&b, "  chain mark-for-masquerade {\n    meta mark set meta mark | 0x4000\n  }\n")
	var picks []string
	for i, be := range backends {
		ep := fmt.Sprintf("endpoint-%s-%d", id, i)
		fmt.Fprintf(&b, "  chain %s {\n    ip saddr %s jump mark-for-masquerade\n    meta l4proto tcp dnat to %s\n  }\n", ep, be.Addr(), be)
		picks = append(picks, fmt.Sprintf("%d : goto %s", i, ep))
	}
	fmt.Fprintf(&b, "  chain %s {\n    numgen random mod %d vmap { %s }\n  }\n", svc, len(backends), strings.Join(picks, ", "))
	fmt.Fprintf(&b, "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict;\n    elements = { %s . tcp . %d : goto %s }\n  }\n",
		clusterIP, port, svc)
	nodePorts := ""
	if nodePort != 0 {
		ext := "external-" + id + "-tcp"
		fmt.Fprintf(&b, "  chain %s {\n    jump mark-for-masquerade\n    goto %s\n  }\n", ext, svc)
		fmt.Fprintf(&b, "  map service-nodeports {\n    type inet_proto . inet_service : verdict;\n    elements = { tcp . %d : goto %s }\n  }\n", nodePort, ext)
		nodePorts = "    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n"
	}
	fmt.Fprintf(&b, "  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n%s  }\n", nodePorts)
	fmt.Fprintf(&b, "  chain nat-prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    jump services\n  }\n")
	fmt.Fprintf(&b, "  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n")
	fmt.Fprintf(&b, "}\n")
	path := filepath.Join(tb.TempDir(), "kube-proxy.nft")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	r.Node.Exec(tb, "nft", "-f", path)
}
