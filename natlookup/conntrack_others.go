//go:build !linux

package natlookup

import "net/netip"

// Conntrack is unavailable outside Linux.
type Conntrack struct{}

// Open fails outside Linux.
func Open(string) (*Conntrack, error) { return nil, ErrUnsupported }

// Reached never finds anything.
func (*Conntrack) Reached(netip.AddrPort, netip.AddrPort) (netip.AddrPort, bool, error) {
	return netip.AddrPort{}, false, ErrUnsupported
}

// Close does nothing.
func (*Conntrack) Close() error { return nil }
