package conntable

import (
	"net/netip"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
)

// Counters are cumulative traffic figures: a connection's, as the kernel
// reports them, or a series' sum over its connections.
type Counters struct {
	Sent, Received, Retransmits, Lost uint64
}

// CountersOf returns the record's cumulative counters.
func CountersOf(rec *bpf.Record) Counters {
	return Counters{rec.BytesSent, rec.BytesReceived, rec.Retransmits, rec.Lost}
}

// Max is the larger of c and o per field.
func (c Counters) Max(o Counters) Counters {
	return Counters{max(c.Sent, o.Sent), max(c.Received, o.Received), max(c.Retransmits, o.Retransmits), max(c.Lost, o.Lost)}
}

// Sub is c - prev, clamped at zero per field: counters only grow.
func (c Counters) Sub(prev Counters) Counters {
	d := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return Counters{d(c.Sent, prev.Sent), d(c.Received, prev.Received), d(c.Retransmits, prev.Retransmits), d(c.Lost, prev.Lost)}
}

// Add is c + o per field.
func (c Counters) Add(o Counters) Counters {
	return Counters{c.Sent + o.Sent, c.Received + o.Received, c.Retransmits + o.Retransmits, c.Lost + o.Lost}
}

// Conn is what is known of a connection's two ends: enough to place it in
// any series.
type Conn struct {
	Local, Peer *identity.Identity
	PeerAddr    netip.Addr
	PeerPort    uint16
	// Small fields last: they share the port's word (connState must fit
	// maxConnState).
	Direction bpf.Direction
	IPv6      bool
}

// ConnOf describes rec's connection with its ends' identities.
func ConnOf(rec *bpf.Record, local, peer *identity.Identity) Conn {
	return Conn{Direction: rec.Direction, IPv6: rec.LocalAddr.Is6() && !rec.LocalAddr.Is4In6(), Local: local, Peer: peer,
		PeerAddr: rec.PeerAddr, PeerPort: rec.PeerPort}
}

// Server is the end that accepted: the destination in Istio's terms.
func (c *Conn) Server() *identity.Identity {
	if c.Direction == bpf.DirectionInbound {
		return c.Local
	}
	return c.Peer
}

// Client is the end that connected: the source in Istio's terms.
func (c *Conn) Client() *identity.Identity {
	if c.Direction == bpf.DirectionInbound {
		return c.Peer
	}
	return c.Local
}

// Observation is what one record means for the metrics and the logs.
type Observation struct {
	Local, Peer *identity.Identity
	// Delta is what the record adds to the counters since the connection's
	// previous record: the sum over a connection's records is its total.
	Delta Counters
	// RetransmitsByType is what the record adds to the connection's
	// retransmits by type (bpf.Record.RetransmitsByType) since its
	// previous record, as Delta is for the counters: a report adds what
	// grew since the last, the close the rest, so the sum over a
	// connection is its total (since the baseline, for one open before
	// the receiver started).
	RetransmitsByType [bpf.RetransmitTypes]uint32
	// BecameOpen / WasOpen move the open-connections count.
	BecameOpen, WasOpen bool
	// Dialled is set when the node translated the address the connection
	// dialled (a Service's ClusterIP): it is that address, and the record's
	// peer has been rewritten to the backend reached.
	Dialled netip.AddrPort
}
