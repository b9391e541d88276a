// Package identity is the seam between connection records and whatever
// knows who owns an address (Kubernetes, in package identity/kube). It knows
// nothing of eBPF or pdata: the receiver asks it about each end of a
// connection once, when the connection is first seen, and keeps the answer
// with the connection.
package identity

import (
	"net/netip"
	"time"
)

// Unknown is the value reported for an identity field nobody could resolve,
// as Istio and Kmesh report it.
const Unknown = "unknown"

// Role says which end of a connection is being resolved. A server end may
// resolve to a service; a client end never does.
type Role uint8

const (
	// RoleClient is the end that connected.
	RoleClient Role = iota
	// RoleServer is the end that accepted.
	RoleServer
)

// Identity describes one end of a connection. Empty fields are unknown.
// Resolvers return shared values: callers must not modify them.
type Identity struct {
	Pod    string
	PodUID string
	// PodIP is the pod's primary IP, as a string (shared, not formatted per lookup).
	PodIP     string
	Namespace string
	Node      string
	// Zone is the topology.kubernetes.io/zone label of the end's node.
	Zone         string
	HostNetwork  bool
	Workload     string
	WorkloadKind string
	// ServiceAccount and Principal (spiffe://<trust domain>/ns/<ns>/sa/<sa>).
	ServiceAccount string
	Principal      string
	App            string
	Version        string
	// CanonicalService and CanonicalRevision follow Istio: the
	// service.istio.io/canonical-* labels, then the app labels, then the
	// workload name and "latest".
	CanonicalService  string
	CanonicalRevision string
	Cluster           string
	// Service is the destination service of a server end: FQDN
	// (name.namespace.svc.<domain>), name and namespace.
	Service          string
	ServiceName      string
	ServiceNamespace string
	// Virtual: the address is a Service's own (a ClusterIP), which no
	// socket holds: the node translates connections to it to a backend
	// (see BackendResolver).
	Virtual bool
}

// Resolver answers who held an address and port at a time. Implementations
// must be safe for concurrent use and should not allocate per call: the
// receiver calls Resolve for both ends of every new connection.
type Resolver interface {
	Resolve(addr netip.Addr, port uint16, at time.Time, role Role) *Identity
}

// BackendResolver is implemented by resolvers that know which backends
// stand behind a Service's virtual address.
type BackendResolver interface {
	// ResolveBackend returns who held addr:port at time at, reached
	// through service (an identity with Virtual set, from Resolve): the
	// backend's own identity with the destination service set to
	// service's. nil when the backend is unknown.
	ResolveBackend(service *Identity, addr netip.Addr, port uint16, at time.Time) *Identity
}

// PodResolver is implemented by resolvers that know pods by UID and nodes
// by name: the local end found by its network namespace (LocalResolver).
type PodResolver interface {
	// ResolvePod returns the pod with this UID as a connection end on
	// port in role (a server end gets the service of its port, as
	// Resolve gives it), alive or deleted within the grace period; nil
	// when unknown.
	ResolvePod(uid string, port uint16, role Role) *Identity
	// ResolveNode returns the node of this name; nil when unknown.
	ResolveNode(name string) *Identity
}

// LocalResolver resolves the local end of a connection by the network
// namespace of its socket (its inode), which no other pod can take over as
// an IP can be. nil when the namespace tells nothing: the address rule
// applies then.
type LocalResolver interface {
	ResolveLocal(netns uint64, addr netip.Addr, port uint16, at time.Time, role Role) *Identity
}

// AddressOnly resolves nothing: every end is known only by its address.
// The receiver uses it when Kubernetes identity is off.
type AddressOnly struct{}

var empty = &Identity{}

// Resolve returns the empty identity.
func (AddressOnly) Resolve(netip.Addr, uint16, time.Time, Role) *Identity { return empty }

// OrUnknown returns v, or Unknown when v is empty.
func OrUnknown(v string) string {
	if v == "" {
		return Unknown
	}
	return v
}

// OrDash returns v, or "-" when v is empty: the access-log convention.
func OrDash(v string) string {
	if v == "" {
		return "-"
	}
	return v
}
