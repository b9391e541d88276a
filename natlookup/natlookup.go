// Package natlookup asks a network namespace's connection tracking where a
// connection really went: for a connection to a Service's virtual address
// that the node translated (kube-proxy's DNAT to a backend), the backend's
// address and port. It knows nothing of eBPF, Kubernetes or pdata; the
// connection table calls it once per translated connection, through the
// Lookup interface.
package natlookup

import (
	"errors"
	"net/netip"
)

// Lookup finds the destination a connection from src to dst reached after
// the node's address translation.
type Lookup interface {
	// Reached returns the address and port the connection src -> dst was
	// translated to. ok is false (and err nil) when connection tracking
	// has no entry for it, or the entry was not translated.
	Reached(src, dst netip.AddrPort) (reached netip.AddrPort, ok bool, err error)
}

// ErrUnsupported is returned by Open where conntrack is not available
// (outside Linux).
var ErrUnsupported = errors.New("conntrack lookups need Linux")
