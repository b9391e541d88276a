// Package identity is the seam between connection records and whatever
// knows who owns an address (Kubernetes, later). It knows nothing of eBPF or
// pdata: the receiver asks it about each end of a connection once, when the
// connection is first seen, and keeps the answer with the connection.
package identity

import (
	"net/netip"
	"time"
)

// Unknown is the value reported for an identity field nobody could resolve,
// as Istio and Kmesh report it.
const Unknown = "unknown"

// Identity describes one end of a connection. Empty fields are unknown.
// Resolvers return shared values: callers must not modify them.
type Identity struct {
	Workload     string
	WorkloadKind string
	Namespace    string
	Pod          string
	PodUID       string
	Node         string
	// Service is the destination service's FQDN, for the server end only.
	Service string
}

// Resolver answers who held an address and port at a time. Implementations
// must be safe for concurrent use and should not allocate per call: the
// receiver calls Resolve for both ends of every new connection.
type Resolver interface {
	Resolve(addr netip.Addr, port uint16, at time.Time) *Identity
}

// AddressOnly resolves nothing: every end is known only by its address.
// The receiver uses it when Kubernetes identity is off or unavailable.
type AddressOnly struct{}

var empty = &Identity{}

// Resolve returns the empty identity.
func (AddressOnly) Resolve(netip.Addr, uint16, time.Time) *Identity { return empty }

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
