//go:build !linux

package podnetns

import (
	"errors"
	"net/netip"
)

// InterfaceAddrs needs Linux (network namespaces).
func InterfaceAddrs(string) ([]netip.Addr, error) {
	return nil, errors.New("interface addresses of a network namespace need Linux")
}
