package bpf

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Listeners are one network namespace's listening TCP sockets and its
// ephemeral port range: what tells, for a connection that opened before
// the probe, which end connected.
type Listeners struct {
	ports map[netip.AddrPort]struct{} // the address may be unspecified (any)
	// Ephemeral is the namespace's ip_local_port_range: the ports
	// connect() picks from. Zero when unknown.
	EphemeralLo, EphemeralHi uint16
}

// Direction is the direction of an established connection whose local end
// is addr:port: inbound when a socket of the namespace listens on that
// port (the connection was accepted), outbound when nothing listens there
// and the port is one connect() picks, else unknown.
func (l *Listeners) Direction(addr netip.Addr, port uint16) Direction {
	if l == nil {
		return DirectionUnknown
	}
	addr = addr.Unmap()
	if l.listens(addr, port) {
		return DirectionInbound
	}
	if l.EphemeralLo != 0 && port >= l.EphemeralLo && port <= l.EphemeralHi {
		return DirectionOutbound
	}
	return DirectionUnknown
}

// Add records a listening socket (addr may be unspecified: any address).
func (l *Listeners) Add(ap netip.AddrPort) {
	if l.ports == nil {
		l.ports = map[netip.AddrPort]struct{}{}
	}
	l.ports[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = struct{}{}
}

func (l *Listeners) listens(addr netip.Addr, port uint16) bool {
	for _, a := range [...]netip.Addr{addr, netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
		if _, ok := l.ports[netip.AddrPortFrom(a, port)]; ok {
			return true
		}
	}
	return false
}

// tcpListen is TCP_LISTEN in /proc/net/tcp's st column.
const tcpListen = "0A"

// Parse adds the listening sockets of a /proc/net/tcp or
// /proc/net/tcp6 table to l.
func (l *Listeners) Parse(table io.Reader) error {
	sc := bufio.NewScanner(table)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != tcpListen {
			continue
		}
		ap, err := parseProcAddr(f[1])
		if err != nil {
			return fmt.Errorf("parse %q: %w", sc.Text(), err)
		}
		l.Add(ap)
	}
	return sc.Err()
}

// ParsePortRange reads ip_local_port_range ("32768\t60999").
func (l *Listeners) ParsePortRange(s string) error {
	f := strings.Fields(s)
	if len(f) != 2 {
		return fmt.Errorf("ip_local_port_range: %q", s)
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || lo > hi {
		return fmt.Errorf("ip_local_port_range: %q", s)
	}
	l.EphemeralLo, l.EphemeralHi = uint16(lo), uint16(hi)
	return nil
}

// parseProcAddr parses "0100007F:1F90" (IPv4) or 32 hex digits and a port
// (IPv6): the address as the kernel's 32-bit words in host (little-endian)
// order, the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	host, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("no port in %q", s)
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	raw, err := hex.DecodeString(host)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q", host)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
