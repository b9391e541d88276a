package kube

import (
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tcpconn/tcpconn/identity"
)

// podEntry is one pod's hold on its addresses: from its creation to its
// deletion (end is zero while it lives).
type podEntry struct {
	uid   types.UID
	start time.Time
	end   time.Time
	id    *identity.Identity
	// byPort is the pod's identity as the destination of each service
	// port that selects it, keyed by target port.
	byPort map[uint16]*identity.Identity
	// viaService is the pod's identity as the backend of each service
	// whose EndpointSlices hold it, keyed by the service's identity.
	viaService map[*identity.Identity]*identity.Identity
	ips        []netip.Addr
	// ports declared by a host-network pod, which shares its node's IP.
	ports []uint16
}

// covers reports whether the pod held its addresses at t.
func (e *podEntry) covers(t time.Time) bool {
	return !t.Before(e.start) && (e.end.IsZero() || t.Before(e.end))
}

// snapshot is an immutable index of the cluster built from the informer
// caches. Lookups read it without locks or allocation; changes build a new
// one that replaces it atomically.
type snapshot struct {
	pods      map[netip.Addr][]*podEntry
	hostPorts map[netip.AddrPort]*podEntry
	nodes     map[netip.Addr]*identity.Identity
	services  map[netip.Addr]*identity.Identity
	// nodePorts are the services on each node port, open on every node IP.
	nodePorts map[uint16]*identity.Identity
	byUID     map[types.UID]*podEntry
	// zones are the nodes' zones by node name.
	zones map[string]string
	// nodeByName: the nodes' identities by name.
	nodeByName map[string]*identity.Identity
	// deleted: pods deleted within the grace period, by UID.
	deleted map[types.UID]*podEntry
}

// sources are the inputs of a snapshot.
type sources struct {
	pods       []*corev1.Pod
	services   []*corev1.Service
	slices     []*discoveryv1.EndpointSlice
	nodes      []*corev1.Node
	tombstones []*podEntry
	owners     owners
	// local: the addresses of this node's own interfaces.
	local localNode
}

// localNode is the node the resolver runs on and the addresses its
// interfaces hold (Resolver.SetLocalNodeAddresses).
type localNode struct {
	name  string
	addrs []netip.Addr // sorted, unique, no loopback
}

func newLocalNode(name string, addrs []netip.Addr) localNode {
	l := localNode{name: name, addrs: make([]netip.Addr, 0, len(addrs))}
	for _, a := range addrs {
		if a = a.Unmap(); a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() {
			l.addrs = append(l.addrs, a)
		}
	}
	slices.SortFunc(l.addrs, netip.Addr.Compare)
	l.addrs = slices.Compact(l.addrs)
	return l
}

func (l localNode) equal(o localNode) bool {
	return l.name == o.name && slices.Equal(l.addrs, o.addrs)
}

func buildSnapshot(src sources, cfg *Config) *snapshot {
	s := &snapshot{
		pods:       make(map[netip.Addr][]*podEntry, len(src.pods)),
		hostPorts:  map[netip.AddrPort]*podEntry{},
		nodes:      make(map[netip.Addr]*identity.Identity, len(src.nodes)),
		services:   make(map[netip.Addr]*identity.Identity, len(src.services)),
		nodePorts:  map[uint16]*identity.Identity{},
		byUID:      make(map[types.UID]*podEntry, len(src.pods)),
		zones:      make(map[string]string, len(src.nodes)),
		nodeByName: make(map[string]*identity.Identity, len(src.nodes)),
		deleted:    make(map[types.UID]*podEntry, len(src.tombstones)),
	}
	svcByKey := make(map[string]*identity.Identity, len(src.services))
	for _, svc := range src.services {
		id := serviceIdentity(svc, cfg)
		svcByKey[svc.Namespace+"/"+svc.Name] = id
		for _, p := range svc.Spec.Ports {
			if p.NodePort > 0 && p.NodePort <= 65535 && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				s.nodePorts[uint16(p.NodePort)] = id
			}
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.services[a] = id
			}
		}
	}
	for _, n := range src.nodes {
		id := nodeIdentity(n, cfg)
		s.nodeByName[n.Name] = id
		if id.Zone != "" {
			s.zones[n.Name] = id.Zone
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				s.nodes[ip] = id
			}
		}
	}
	if id := s.nodeByName[src.local.name]; id != nil {
		for _, a := range src.local.addrs {
			_, nodes := s.nodes[a]
			_, service := s.services[a]
			if !nodes && !service {
				s.nodes[a] = id
			}
		}
	}
	served := servedPorts(src.slices, svcByKey)
	backed := backedServices(src.slices, svcByKey)

	for _, p := range src.pods {
		ips := podIPs(p)
		e := &podEntry{uid: p.UID, start: p.CreationTimestamp.Time, end: podEnd(p), id: podIdentity(p, src.owners, s.zones[p.Spec.NodeName], cfg), ips: ips}
		if len(ips) == 0 {
			// By UID only: its network namespace names it (ResolvePod)
			// before the API server has its address, which is when a
			// pod's very first connections come.
			s.byUID[p.UID] = e
			continue
		}
		if p.Spec.HostNetwork {
			e.ports = declaredPorts(p)
			for _, ip := range ips {
				for _, port := range e.ports {
					if e.end.IsZero() { // a finished host-network pod listens no more
						s.hostPorts[netip.AddrPortFrom(ip, port)] = e
					}
				}
			}
		} else {
			for _, ip := range ips {
				s.pods[ip] = append(s.pods[ip], e)
			}
		}
		for _, ip := range ips {
			for ap, svc := range served[ip] {
				if e.byPort == nil {
					e.byPort = map[uint16]*identity.Identity{}
				}
				e.byPort[ap] = withService(e.id, svc)
			}
			for _, svc := range backed[ip] {
				if e.viaService == nil {
					e.viaService = map[*identity.Identity]*identity.Identity{}
				}
				if _, done := e.viaService[svc]; done {
					continue
				}
				// Share the byPort value when it names the same service.
				id := withService(e.id, svc)
				for _, v := range e.byPort {
					if v.Service == svc.Service {
						id = v
						break
					}
				}
				e.viaService[svc] = id
			}
		}
		s.byUID[p.UID] = e
	}
	for _, t := range src.tombstones {
		if _, alive := s.byUID[t.uid]; alive {
			continue
		}
		s.deleted[t.uid] = t
		for _, ip := range t.ips {
			if len(t.ports) == 0 {
				s.pods[ip] = append(s.pods[ip], t)
			}
		}
	}
	return s
}

// finishPrecision: the API's times have one-second precision (rounded
// down), so a finished pod is taken to hold its IP to the end of the second
// it finished in. Its successor cannot have the IP sooner: the network
// plugin releases it only when the pod's sandbox is torn down, after its
// containers ended.
const finishPrecision = time.Second

// podEnd is when a pod stopped holding its IPs while it is still in the
// API: for a finished pod (phase Succeeded or Failed) the time it finished,
// else zero.
func podEnd(p *corev1.Pod) time.Time {
	at := finishedAt(p)
	if at.IsZero() {
		return at
	}
	return at.Add(finishPrecision)
}

// servedPorts maps each endpoint address to its ports and the service
// behind each. A pod in several services on one port gets the first by
// namespace/name, so the choice is stable.
func servedPorts(eps []*discoveryv1.EndpointSlice, svcByKey map[string]*identity.Identity) map[netip.Addr]map[uint16]*identity.Identity {
	out := map[netip.Addr]map[uint16]*identity.Identity{}
	keys := make([]string, 0, len(eps))
	byKey := make(map[string][]*discoveryv1.EndpointSlice, len(eps))
	for _, es := range eps {
		k := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], es)
	}
	slices.Sort(keys)
	for _, k := range keys {
		svc := svcByKey[k]
		if svc == nil {
			continue
		}
		for _, es := range byKey[k] {
			for _, ep := range es.Endpoints {
				for _, addr := range ep.Addresses {
					ip, err := netip.ParseAddr(addr)
					if err != nil {
						continue
					}
					for _, port := range es.Ports {
						if port.Port == nil || (port.Protocol != nil && *port.Protocol != corev1.ProtocolTCP) {
							continue
						}
						m := out[ip]
						if m == nil {
							m = map[uint16]*identity.Identity{}
							out[ip] = m
						}
						if _, taken := m[uint16(*port.Port)]; !taken {
							m[uint16(*port.Port)] = svc
						}
					}
				}
			}
		}
	}
	return out
}

// backedServices maps each endpoint address to every service whose
// EndpointSlices hold it, whatever the port.
func backedServices(eps []*discoveryv1.EndpointSlice, svcByKey map[string]*identity.Identity) map[netip.Addr][]*identity.Identity {
	out := map[netip.Addr][]*identity.Identity{}
	for _, es := range eps {
		svc := svcByKey[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]]
		if svc == nil {
			continue
		}
		for _, ep := range es.Endpoints {
			for _, addr := range ep.Addresses {
				if ip, err := netip.ParseAddr(addr); err == nil && !slices.Contains(out[ip], svc) {
					out[ip] = append(out[ip], svc)
				}
			}
		}
	}
	return out
}

func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	add(p.Status.PodIP)
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	return out
}

func declaredPorts(p *corev1.Pod) []uint16 {
	var out []uint16
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Protocol != "" && cp.Protocol != corev1.ProtocolTCP {
				continue
			}
			for _, port := range []int32{cp.ContainerPort, cp.HostPort} {
				if port > 0 && !slices.Contains(out, uint16(port)) {
					out = append(out, uint16(port))
				}
			}
		}
	}
	return out
}

// resolve finds the identity of addr:port at time t. It does not allocate.
func (s *snapshot) resolve(addr netip.Addr, port uint16, t time.Time, role identity.Role) *identity.Identity {
	if e := pickEntry(s.pods[addr], t); e != nil {
		if role == identity.RoleServer {
			if id := e.byPort[port]; id != nil {
				return id
			}
		}
		return e.id
	}
	if e := s.hostPorts[netip.AddrPortFrom(addr, port)]; e != nil && role == identity.RoleServer {
		if id := e.byPort[port]; id != nil {
			return id
		}
		return e.id
	}
	if id := s.nodes[addr]; id != nil {
		if role == identity.RoleServer {
			if svc := s.nodePorts[port]; svc != nil {
				return svc // a node port: the node translates it to a backend
			}
		}
		return id
	}
	if role == identity.RoleServer {
		if id := s.services[addr]; id != nil {
			return id
		}
	}
	return nil
}

// resolvePod finds the pod with this UID, living or deleted, as an end on
// port in role. It does not allocate.
func (s *snapshot) resolvePod(uid string, port uint16, role identity.Role) *identity.Identity {
	e := s.byUID[types.UID(uid)]
	if e == nil {
		e = s.deleted[types.UID(uid)]
	}
	if e == nil {
		return nil
	}
	if role == identity.RoleServer {
		if id := e.byPort[port]; id != nil {
			return id
		}
	}
	return e.id
}

// resolveBackend finds the identity of the backend addr:port that a
// connection to service reached at time t: the pod's, with service as its
// destination service. Only a backend the service's EndpointSlices do not
// (or not yet) list costs an allocation.
func (s *snapshot) resolveBackend(service *identity.Identity, addr netip.Addr, port uint16, t time.Time) *identity.Identity {
	e := pickEntry(s.pods[addr], t)
	if e == nil {
		e = s.hostPorts[netip.AddrPortFrom(addr, port)]
	}
	if e == nil {
		return nil
	}
	if id := e.viaService[service]; id != nil {
		return id
	}
	if service == nil {
		return e.id
	}
	return withService(e.id, service)
}

// pickEntry chooses the pod that held the address at t: among those whose
// lifetime covers t, the one that ended first (a pod that was deleted after
// t certainly held the address then; its successor's creation time has only
// second precision); else the living pod.
func pickEntry(entries []*podEntry, t time.Time) *podEntry {
	var best, alive *podEntry
	for _, e := range entries {
		if e.end.IsZero() && alive == nil {
			alive = e
		}
		if !e.covers(t) {
			continue
		}
		if best == nil || endsBefore(e, best) {
			best = e
		}
	}
	if best != nil {
		return best
	}
	return alive
}

func endsBefore(a, b *podEntry) bool {
	if a.end.IsZero() {
		return false
	}
	return b.end.IsZero() || a.end.Before(b.end)
}
