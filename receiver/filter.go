package receiver

import (
	"net/netip"

	"github.com/tcpconn/tcpconn/bpf"
)

// addrFilter decides, per record, whether its connection is reported.
type addrFilter struct {
	include, exclude []netip.Prefix
}

// newAddrFilter parses prefixes that Config.Validate has already checked.
func newAddrFilter(cfg FilterConfig) addrFilter {
	parse := func(in []string) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(in))
		for _, s := range in {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
			}
		}
		return out
	}
	return addrFilter{include: parse(cfg.IncludeCIDRs), exclude: parse(cfg.ExcludeCIDRs)}
}

func (f addrFilter) keep(rec *bpf.Record) bool {
	if len(f.include) > 0 && !contains(f.include, rec.LocalAddr) && !contains(f.include, rec.PeerAddr) {
		return false
	}
	return !contains(f.exclude, rec.LocalAddr) && !contains(f.exclude, rec.PeerAddr)
}

func contains(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
