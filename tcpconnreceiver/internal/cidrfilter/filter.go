// Package cidrfilter keeps or drops connections by the addresses of their
// two ends, before anything is counted or logged. It knows records only:
// no pdata, no identities.
package cidrfilter

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tcpconn/tcpconn/bpf"
)

// Config selects connections by the addresses of their two ends.
type Config struct {
	// IncludeCIDRs, when set, keeps only connections with at least one end
	// in one of these prefixes.
	IncludeCIDRs []string `mapstructure:"include_cidrs"`
	// ExcludeCIDRs drops connections with either end in one of these prefixes.
	ExcludeCIDRs []string `mapstructure:"exclude_cidrs"`
}

// Validate names every prefix that does not parse; prefix is the
// configuration path of Config (e.g. "filter.").
func (c *Config) Validate(prefix string) error {
	var errs []error
	for i, s := range c.IncludeCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("%sinclude_cidrs[%d]: %w", prefix, i, err))
		}
	}
	for i, s := range c.ExcludeCIDRs {
		if _, err := netip.ParsePrefix(s); err != nil {
			errs = append(errs, fmt.Errorf("%sexclude_cidrs[%d]: %w", prefix, i, err))
		}
	}
	return errors.Join(errs...)
}

// Filter decides, per record, whether its connection is reported.
type Filter struct {
	include, exclude []netip.Prefix
}

// New parses prefixes that Config.Validate has already checked.
func New(cfg Config) Filter {
	parse := func(in []string) []netip.Prefix {
		out := make([]netip.Prefix, 0, len(in))
		for _, s := range in {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
			}
		}
		return out
	}
	return Filter{include: parse(cfg.IncludeCIDRs), exclude: parse(cfg.ExcludeCIDRs)}
}

// KeepAddr reports whether an end alone at addr passes the filter: the
// local address of what has no connection (refused connects, listeners).
func (f Filter) KeepAddr(addr netip.Addr) bool {
	return (len(f.include) == 0 || contains(f.include, addr)) && !contains(f.exclude, addr)
}

// Keep reports whether rec's connection passes the filter.
func (f Filter) Keep(rec *bpf.Record) bool {
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
