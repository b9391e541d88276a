package tcpconnreceiver

import (
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/podnetns"
)

// netnsOwners is podnetns.Scanner's lookup.
type netnsOwners interface {
	Resolve(ino uint64, now time.Time) (podnetns.Owner, bool)
}

// localByNetNS resolves a connection's local end by its socket's network
// namespace (identity.LocalResolver): the pod whose processes run there,
// which an IP passed on to another pod cannot change. The node's own
// namespace is the node, or the host-network pod declaring the local port.
type localByNetNS struct {
	owners netnsOwners
	pods   identity.PodResolver
	addrs  identity.Resolver
	node   string
}

// ResolveLocal implements identity.LocalResolver; nil when the namespace
// is not known to belong to a pod or the node (the address rule applies).
func (l *localByNetNS) ResolveLocal(ino uint64, addr netip.Addr, port uint16, at time.Time, role identity.Role) *identity.Identity {
	o, ok := l.owners.Resolve(ino, time.Now())
	if !ok {
		return nil
	}
	if o.Host {
		if id := l.addrs.Resolve(addr, port, at, role); id != nil && id.HostNetwork && !id.Virtual {
			return id // a host-network pod by its port, or the node by its IP
		}
		if l.node == "" {
			return nil
		}
		return l.pods.ResolveNode(l.node)
	}
	return l.pods.ResolvePod(o.PodUID, port, role)
}

// scanNode refreshes what the receiver knows of the node's namespaces and
// addresses; the report walks call it (as they enter every namespace
// anyway), or the start alone without walks.
func (r *tcpconnReceiver) scanNode() {
	r.scanNetNS()
	r.refreshNodeAddrs()
}

// refreshNodeAddrs gives the resolver the addresses of the node's own
// interfaces, read in the host's network namespace, as the node's: a CNI
// bridge's gateway address, which kubelet's probes come from, is in no
// Node object. It needs the node's name and the host's namespace.
func (r *tcpconnReceiver) refreshNodeAddrs() {
	node := r.cfg.Kubernetes.NodeName
	if r.kube == nil || node == "" || r.hostNS == "" {
		return
	}
	addrs, err := podnetns.InterfaceAddrs(r.hostNS)
	if err != nil {
		if err.Error() != r.nodeAddrsErr { // each new reason once, not every walk
			r.nodeAddrsErr = err.Error()
			r.set.Logger.Warn("reading the node's interface addresses failed: connections from those its Node object does not list have an unknown peer", zap.Error(err))
		}
		return
	}
	r.nodeAddrsErr = ""
	r.kube.SetLocalNodeAddresses(node, addrs)
	r.set.Logger.Debug("node interface addresses", zap.String("node", node), zap.Int("addresses", len(addrs)))
}

// scanNetNS refreshes which pod each network namespace belongs to.
func (r *tcpconnReceiver) scanNetNS() {
	if r.netns == nil {
		return
	}
	start := time.Now()
	m, err := r.netns.Scan()
	if err != nil {
		r.set.Logger.Warn("reading the pods' network namespaces from /proc failed: local ends are resolved by address", zap.Error(err))
		return
	}
	r.set.Logger.Debug("pod network namespaces", zap.Int("pods", m.Len()), zap.Duration("took", time.Since(start)))
}
