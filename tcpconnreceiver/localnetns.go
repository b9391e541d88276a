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
	Owner(ino uint64) (podnetns.Owner, bool)
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
	o, ok := l.owners.Owner(ino)
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

// scanNetNS refreshes which pod each network namespace belongs to; the
// report walks call it, as they enter every namespace anyway.
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
