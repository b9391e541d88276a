package bpf

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ListenStats are one network namespace's listener health counters, from
// its /proc/net/netstat (TcpExt), cumulative since the namespace was
// created: every namespace (every pod) keeps its own.
type ListenStats struct {
	NetNS uint32
	// Local is an address of the namespace (its first global unicast
	// address, IPv4 first): what names its pod. Invalid when it has none.
	Local netip.Addr
	// Overflows is ListenOverflows: handshakes completed (or SYNs with
	// cookies off) that found a listener's accept queue full.
	Overflows uint64
	// Drops is ListenDrops: SYNs and completing ACKs a listener dropped
	// for any reason (the overflows among them).
	Drops uint64
}

// parseNetstat reads ListenOverflows and ListenDrops from a
// /proc/net/netstat table: pairs of lines, names then values, per
// prefix.
func parseNetstat(r io.Reader, s *ListenStats) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 8192), 1<<20)
	var names []string
	found := 0
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "TcpExt:") {
			continue
		}
		f := strings.Fields(line)[1:]
		if names == nil {
			names = f
			continue
		}
		if len(f) != len(names) {
			return fmt.Errorf("TcpExt: %d names, %d values", len(names), len(f))
		}
		for i, n := range names {
			var dst *uint64
			switch n {
			case "ListenOverflows":
				dst = &s.Overflows
			case "ListenDrops":
				dst = &s.Drops
			default:
				continue
			}
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return fmt.Errorf("TcpExt %s: %w", n, err)
			}
			*dst = v
			found++
		}
		break
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if found != 2 {
		return fmt.Errorf("no ListenOverflows and ListenDrops in TcpExt")
	}
	return nil
}

// parseSockstatTCP reads how many TCP sockets a /proc/net/sockstat (TCP:)
// or sockstat6 (TCP6:) table counts in use: the namespace's hashed ones,
// listening, connected or closing (not time-wait). prefix is "TCP:" or
// "TCP6:".
func parseSockstatTCP(table, prefix string) (int, error) {
	for line := range strings.Lines(table) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != prefix {
			continue
		}
		if f[1] != "inuse" {
			return 0, fmt.Errorf("%s %s: not inuse", prefix, f[1])
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return 0, fmt.Errorf("%s inuse: %w", prefix, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s line", prefix)
}
