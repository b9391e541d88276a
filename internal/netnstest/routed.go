package netnstest

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
)

// NewNS creates an empty network namespace (loopback up), removed at the
// end of the test. name should be short and unique on the machine.
func NewNS(tb testing.TB, name string) *NS {
	tb.Helper()
	RequireRoot(tb)
	ns := newNS(tb, name)
	ns.Exec(tb, "ip", "link", "set", "lo", "up")
	return ns
}

// Routed is a "node" namespace that routes between "pod" namespaces, each
// behind a veth of its own, as a routing CNI plugin (Calico, Cilium in
// native routing) wires them: a pod has a /32 and a default route to the
// node (169.254.1.1 on the node's end of every veth), the node a host route per pod, so every packet between pods
// crosses the node's netfilter (its nat table, its conntrack).
type Routed struct {
	Node   *NS
	Pods   []*NS
	PodIPs []netip.Addr
	tag    string
	// proxied: the node has kube-proxy's KUBE-SERVICES chain.
	proxied bool
	// nodePorts: the node has kube-proxy's KUBE-NODEPORTS chain.
	nodePorts bool
}

// NewRouted creates a node and pods, pod i at prefix.(10+i). prefix is the
// caller's own /24 (three octets).
func NewRouted(tb testing.TB, prefix [3]byte, pods int) *Routed {
	tb.Helper()
	RequireRoot(tb)
	n := counter.Add(1)
	r := &Routed{tag: fmt.Sprintf("%d%d", os.Getpid()%100000, n)}
	r.Node = NewNS(tb, "tcn"+r.tag)
	r.Node.Exec(tb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for range pods {
		r.AddPod(tb, netip.AddrFrom4([4]byte{prefix[0], prefix[1], prefix[2], byte(10 + len(r.Pods))}))
	}
	return r
}

// AddPod adds a pod namespace with address ip, routed by the node.
func (r *Routed) AddPod(tb testing.TB, ip netip.Addr) *NS {
	tb.Helper()
	i := len(r.Pods)
	pod := NewNS(tb, fmt.Sprintf("tcp%sp%d", r.tag, i))
	host := fmt.Sprintf("vn%sp%d", r.tag, i)
	run(tb, "ip", "link", "add", host, "netns", r.Node.Name, "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	pod.Exec(tb, "ip", "addr", "add", ip.String()+"/32", "dev", "eth0")
	pod.Exec(tb, "ip", "link", "set", "eth0", "up")
	pod.Exec(tb, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
	pod.Exec(tb, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
	r.Node.Exec(tb, "ip", "link", "set", host, "up")
	// The pods' gateway: the node's end of every pod's veth answers for it.
	r.Node.Exec(tb, "ip", "addr", "add", "169.254.1.1/32", "dev", host)
	r.Node.Exec(tb, "ip", "route", "add", ip.String()+"/32", "dev", host)
	r.Pods = append(r.Pods, pod)
	r.PodIPs = append(r.PodIPs, ip)
	return pod
}

// NodePath is the node namespace's path, for tools that open namespaces
// by path.
func (r *Routed) NodePath() string { return "/run/netns/" + r.Node.Name }

// KubeProxyService writes into the node's nat table the chains kube-proxy's
// iptables mode writes for a ClusterIP service: KUBE-SERVICES (from
// PREROUTING and OUTPUT) jumps on the ClusterIP and port to the service's
// KUBE-SVC chain, which picks one KUBE-SEP chain per backend with
// "statistic mode random" and DNATs there. id names the chains.
func (r *Routed) KubeProxyService(tb testing.TB, id string, clusterIP netip.Addr, port uint16, backends ...netip.AddrPort) {
	tb.Helper()
	ipt := func(args ...string) { r.Node.Exec(tb, append([]string{"iptables", "-w", "-t", "nat"}, args...)...) }
	if !r.proxied {
		r.proxied = true
		ipt("-N", "KUBE-SERVICES")
		ipt("-A", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
		ipt("-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES")
	}
	svc := "KUBE-SVC-" + id
	ipt("-N", svc)
	ipt("-A", "KUBE-SERVICES", "-d", clusterIP.String()+"/32", "-p", "tcp", "-m", "comment", "--comment", id+" cluster IP",
		"-m", "tcp", "--dport", fmt.Sprint(port), "-j", svc)
	for i, b := range backends {
		sep := fmt.Sprintf("KUBE-SEP-%s%d", id, i)
		ipt("-N", sep)
		ipt("-A", sep, "-s", b.Addr().String()+"/32", "-j", "MARK", "--set-xmark", "0x4000/0x4000") // KUBE-MARK-MASQ (hairpin)
		ipt("-A", sep, "-p", "tcp", "-m", "tcp", "-j", "DNAT", "--to-destination", b.String())
		jump := []string{"-A", svc}
		if left := len(backends) - i; left > 1 {
			jump = append(jump, "-m", "statistic", "--mode", "random", "--probability", fmt.Sprintf("%.11f", 1/float64(left)))
		}
		ipt(append(jump, "-j", sep)...)
	}
}

// NodeAddress gives the node namespace an address of its own (on its
// loopback), as a node's InternalIP, which pods reach through their
// default route.
func (r *Routed) NodeAddress(tb testing.TB, ip netip.Addr) {
	tb.Helper()
	r.Node.Exec(tb, "ip", "addr", "add", ip.String()+"/32", "dev", "lo")
}

// KubeProxyNodePort adds what kube-proxy's iptables mode writes for a
// service's node port: the KUBE-NODEPORTS jump (last in KUBE-SERVICES, for
// destinations local to the node), and a KUBE-EXT chain that marks for
// masquerading and goes on to the service's KUBE-SVC chain, which
// KubeProxyService with the same id must have made.
func (r *Routed) KubeProxyNodePort(tb testing.TB, id string, nodePort uint16) {
	tb.Helper()
	ipt := func(args ...string) { r.Node.Exec(tb, append([]string{"iptables", "-w", "-t", "nat"}, args...)...) }
	if !r.nodePorts {
		r.nodePorts = true
		ipt("-N", "KUBE-NODEPORTS")
		ipt("-A", "KUBE-SERVICES", "-m", "comment", "--comment", "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
			"-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS")
	}
	ext := "KUBE-EXT-" + id
	ipt("-N", ext)
	ipt("-A", ext, "-m", "comment", "--comment", "masquerade traffic for "+id+" external destinations", "-j", "MARK", "--set-xmark", "0x4000/0x4000")
	ipt("-A", ext, "-j", "KUBE-SVC-"+id)
	ipt("-A", "KUBE-NODEPORTS", "-p", "tcp", "-m", "comment", "--comment", id, "-m", "tcp", "--dport", fmt.Sprint(nodePort), "-j", ext)
}

// KubeProxyMasquerade adds kube-proxy's KUBE-POSTROUTING chain to the
// node's nat table: packets marked for masquerading (0x4000, by the
// KUBE-EXT chains of node ports, and by KUBE-SEP chains on hairpin) leave
// with the node's address as their source. MASQUERADE takes an address of
// the outgoing device, or of the node's other devices when it has none: on
// a node whose pod veths hold no address (Calico) that is the node's; here
// every pod veth holds the pods' gateway, 169.254.1.1, which this makes
// link-scoped, so that masquerading passes it over for the node's address
// (NodeAddress, on its loopback) as on such a node.
func (r *Routed) KubeProxyMasquerade(tb testing.TB) {
	tb.Helper()
	for i := range r.Pods {
		host := fmt.Sprintf("vn%sp%d", r.tag, i)
		r.Node.Exec(tb, "ip", "addr", "del", "169.254.1.1/32", "dev", host)
		r.Node.Exec(tb, "ip", "addr", "add", "169.254.1.1/32", "dev", host, "scope", "link")
		// Taking a device's last address took its routes with it.
		r.Node.Exec(tb, "ip", "route", "replace", r.PodIPs[i].String()+"/32", "dev", host)
	}
	ipt := func(args ...string) { r.Node.Exec(tb, append([]string{"iptables", "-w", "-t", "nat"}, args...)...) }
	ipt("-N", "KUBE-POSTROUTING")
	ipt("-A", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING")
	ipt("-A", "KUBE-POSTROUTING", "-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN")
	ipt("-A", "KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", "0x4000")
	ipt("-A", "KUBE-POSTROUTING", "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT", "-j", "MASQUERADE", "--random-fully")
}

// LinkNodes wires two nodes as hosts on one network: a veth between their
// namespaces, each node's address (NodeAddress, which this calls) routed
// to the other over it. Pods stay reachable only through their own node.
func LinkNodes(tb testing.TB, a, b *Routed, aIP, bIP netip.Addr) {
	tb.Helper()
	a.NodeAddress(tb, aIP)
	b.NodeAddress(tb, bIP)
	av, bv := "vn"+a.tag+"x", "vn"+b.tag+"x"
	run(tb, "ip", "link", "add", av, "netns", a.Node.Name, "type", "veth", "peer", "name", bv, "netns", b.Node.Name)
	a.Node.Exec(tb, "ip", "link", "set", av, "up")
	b.Node.Exec(tb, "ip", "link", "set", bv, "up")
	a.Node.Exec(tb, "ip", "route", "add", bIP.String()+"/32", "dev", av, "src", aIP.String())
	b.Node.Exec(tb, "ip", "route", "add", aIP.String()+"/32", "dev", bv, "src", bIP.String())
}
