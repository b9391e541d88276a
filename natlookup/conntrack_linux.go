//go:build linux

package natlookup

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// Conntrack looks connections up in one network namespace's conntrack
// table over ctnetlink (github.com/ti-mo/conntrack). Queries need
// CAP_NET_ADMIN in that namespace. It is safe for concurrent use.
type Conntrack struct {
	conn *conntrack.Conn
}

var _ Lookup = (*Conntrack)(nil)

// Open connects to the conntrack table of the network namespace at
// netnsPath (e.g. the host's, from podnetns.HostNetNS when the caller
// shares the host PID namespace, or /run/netns/<name>); "" is the
// caller's own.
func Open(netnsPath string) (*Conntrack, error) {
	cfg := &netlink.Config{}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("conntrack: open network namespace: %w", err)
		}
		// The socket is made inside the namespace and stays bound to it;
		// the namespace's file is needed only until then.
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	c, err := conntrack.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("conntrack: dial ctnetlink (in %q): %w", nsName(netnsPath), err)
	}
	return &Conntrack{conn: c}, nil
}

func nsName(p string) string {
	if p == "" {
		return "own network namespace"
	}
	return p
}

// Reached implements Lookup with one ctnetlink GET of the original tuple.
func (c *Conntrack) Reached(src, dst netip.AddrPort) (netip.AddrPort, bool, error) {
	var q conntrack.Flow
	q.TupleOrig.IP.SourceAddress = src.Addr().Unmap()
	q.TupleOrig.IP.DestinationAddress = dst.Addr().Unmap()
	q.TupleOrig.Proto.Protocol = syscall.IPPROTO_TCP
	q.TupleOrig.Proto.SourcePort = src.Port()
	q.TupleOrig.Proto.DestinationPort = dst.Port()
	f, err := c.conn.Get(q)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return netip.AddrPort{}, false, nil
		}
		return netip.AddrPort{}, false, fmt.Errorf("conntrack: get %v -> %v: %w", src, dst, err)
	}
	// The reply comes from where the connection really went.
	r := netip.AddrPortFrom(f.TupleReply.IP.SourceAddress, f.TupleReply.Proto.SourcePort)
	if !r.IsValid() || r == netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()) {
		return netip.AddrPort{}, false, nil
	}
	return r, true, nil
}

// Close releases the netlink socket.
func (c *Conntrack) Close() error { return c.conn.Close() }
