package bpf

import (
	"net/netip"
	"time"
	"unsafe"
)

// Kind says which moment of a connection's life a Record reports.
type Kind uint8

// Record kinds: the probe's enum tcpconn_kind, as bpf2go generates it.
const (
	KindOpen    = Kind(tcpconnTcpconnKindTCPCONN_KIND_OPEN)
	KindClose   = Kind(tcpconnTcpconnKindTCPCONN_KIND_CLOSE)
	KindFailure = Kind(tcpconnTcpconnKindTCPCONN_KIND_FAILURE)
	KindUpdate  = Kind(tcpconnTcpconnKindTCPCONN_KIND_UPDATE)
)

// String returns the kind as used in event names (tcp.connection.<kind>).
func (k Kind) String() string {
	switch k {
	case KindOpen:
		return "open"
	case KindClose:
		return "close"
	case KindFailure:
		return "failure"
	case KindUpdate:
		return "update"
	}
	return "unknown"
}

// Direction says which end of the connection is on this node: the client
// (outbound) or the server (inbound).
type Direction uint8

// Directions: the probe's enum tcpconn_direction, as bpf2go generates it.
const (
	DirectionUnknown  = Direction(tcpconnTcpconnDirectionTCPCONN_DIR_UNKNOWN)
	DirectionOutbound = Direction(tcpconnTcpconnDirectionTCPCONN_DIR_OUTBOUND)
	DirectionInbound  = Direction(tcpconnTcpconnDirectionTCPCONN_DIR_INBOUND)
)

// String returns "outbound", "inbound" or "unknown".
func (d Direction) String() string {
	switch d {
	case DirectionOutbound:
		return "outbound"
	case DirectionInbound:
		return "inbound"
	}
	return "unknown"
}

// Flags carry facts about a record that change how it is read.
type Flags uint8

// Flag bits: the probe's enum tcpconn_flag, as bpf2go generates it.
const (
	// FlagAdopted marks a connection whose handshake the probe did not see:
	// its start time, direction and process are unknown.
	FlagAdopted = Flags(tcpconnTcpconnFlagTCPCONN_F_ADOPTED)
	// FlagFinReceived marks a connection whose peer sent a FIN.
	FlagFinReceived = Flags(tcpconnTcpconnFlagTCPCONN_F_FIN_RCVD)
	// FlagFinAcked marks a connection whose own FIN the peer acknowledged.
	FlagFinAcked = Flags(tcpconnTcpconnFlagTCPCONN_F_FIN_ACKED)
	// FlagResetSent marks a close record of a connection the local end
	// reset (see CloseCause).
	FlagResetSent = Flags(tcpconnTcpconnFlagTCPCONN_F_RST_SENT)
	// FlagConnected marks an update record whose local port connect()
	// picked: the local end is the client, even when the direction is
	// unknown (a connection adopted at start).
	FlagConnected = Flags(tcpconnTcpconnFlagTCPCONN_F_CONNECTED)
)

// RetransmitType says why a segment was sent again: the probe's enum
// tcpconn_retrans_type, as bpf2go generates it.
type RetransmitType uint8

// Retransmit types, in the order of Record.RetransmitsByType.
const (
	// RetransmitSYN: the client's SYN (the connect's handshake).
	RetransmitSYN = RetransmitType(tcpconnTcpconnRetransTypeTCPCONN_RETRANS_SYN)
	// RetransmitSYNACK: the server's SYN-ACK.
	RetransmitSYNACK = RetransmitType(tcpconnTcpconnRetransTypeTCPCONN_RETRANS_SYNACK)
	// RetransmitTimeout: data, after a retransmission timeout.
	RetransmitTimeout = RetransmitType(tcpconnTcpconnRetransTypeTCPCONN_RETRANS_TIMEOUT)
	// RetransmitFast: data, in fast recovery (duplicate ACKs, SACK, RACK).
	RetransmitFast = RetransmitType(tcpconnTcpconnRetransTypeTCPCONN_RETRANS_FAST)
	// RetransmitTailLossProbe: data, a tail loss probe.
	RetransmitTailLossProbe = RetransmitType(tcpconnTcpconnRetransTypeTCPCONN_RETRANS_TLP)
	// RetransmitTypes is how many types there are.
	RetransmitTypes = int(tcpconnTcpconnRetransTypeTCPCONN_RETRANS_TYPES)
)

// String is the type as the network.tcp.retransmit.type attribute names
// it: syn, syn_ack, timeout, fast, tail_loss_probe.
func (t RetransmitType) String() string {
	switch t {
	case RetransmitSYN:
		return "syn"
	case RetransmitSYNACK:
		return "syn_ack"
	case RetransmitTimeout:
		return "timeout"
	case RetransmitFast:
		return "fast"
	case RetransmitTailLossProbe:
		return "tail_loss_probe"
	}
	return "unknown"
}

// Record is one decoded probe event. It holds no pointers into the ring
// buffer, so a caller may keep it after the next Read.
type Record struct {
	Kind      Kind
	Direction Direction
	Flags     Flags
	OldState  State
	NewState  State

	// Time is when the event happened; Start when the handshake began
	// (zero for adopted connections).
	Time  time.Time
	Start time.Time
	// ConnID joins the records of one connection: its socket cookie (raw_tp
	// mode: a keyed mix of socket address, ports and peer).
	ConnID uint64

	LocalAddr netip.Addr
	PeerAddr  netip.Addr
	LocalPort uint16
	PeerPort  uint16

	// Exact payload bytes. BytesSent is the payload the peer acknowledged
	// (tcp_sock.bytes_acked less the SYN and FIN sequence numbers it
	// counts), BytesReceived the in-order payload delivered
	// (tcp_sock.bytes_received less the peer's FIN). A record whose
	// direction is unknown (close and update records, which get it from
	// the connection's open record) may still count the SYN of an outbound
	// connection: SetDirection takes it out.
	BytesSent     uint64
	BytesReceived uint64
	BytesRetrans  uint64
	Retransmits   uint64
	Lost          uint64
	SegsIn        uint64
	SegsOut       uint64
	// RetransmitsByType splits Retransmits by RetransmitType (tp_btf mode;
	// all zero in raw_tp mode): the segments the kernel sent again, counted
	// at each retransmit from the kernel's tcp_retransmit_skb tracepoint
	// (SYN-ACKs: the request's count, which the server's socket inherits).
	// Their sum is Retransmits, but for those of a connection open before
	// the probe, and a last retransmit the kernel kept both retransmit
	// programs from.
	RetransmitsByType [RetransmitTypes]uint32

	SRTT   time.Duration
	RTTMin time.Duration
	RTTVar time.Duration

	// Handshake is how long the handshake took, 0 when unknown. Outbound:
	// from SYN_SENT (connect) to ESTABLISHED, or to the failure (time to
	// failure). Inbound: the SYN-ACK's round trip, from the SYN-ACK the
	// handshake's last ACK answered to that ACK (the child socket's first
	// RTT sample, taken from the request's SYN-ACK time), the closest the
	// kernel keeps once the child exists; SYN-ACK retransmissions before
	// it are in Retransmits. Open and failure records carry it; the
	// connection table carries it on to the connection's later records.
	Handshake time.Duration

	// ClientISN and ServerISN are the connection's initial sequence
	// numbers, the same on both ends (ISNKnown): derived from where the
	// socket's counted sequence space starts on each side (snd_una -
	// bytes_acked, rcv_nxt - bytes_received), which takes the direction:
	// unknown on failures and on connections adopted without it. See UID.
	ClientISN, ServerISN uint32
	ISNKnown             bool

	NetNS uint32
	PID   uint32
	Comm  [16]byte
	// Errno is the socket error at the event (ECONNREFUSED, ETIMEDOUT, ...).
	Errno int32

	// synInSent: BytesSent may still count the local SYN (the direction
	// was unknown when it was decoded).
	synInSent bool
	// sndBase, rcvBase: snd_una - bytes_acked and rcv_nxt -
	// bytes_received (hasBases: not a failure); ISNs need the direction.
	sndBase, rcvBase uint32
	hasBases         bool
}

// settleISNs derives the ISNs once the direction is known. Both ends
// count in bytes_received everything after the peer's SYN: rcv_nxt less it
// is the peer's ISN + 1. bytes_acked counts the SYN of a socket that
// connected, not the SYN-ACK of a listener's child: snd_una less it is the
// client's ISN, or the server's + 1.
func (r *Record) settleISNs(end Direction) {
	if !r.hasBases {
		return // not decoded from the probe: as it was made
	}
	r.ISNKnown = false
	switch end {
	case DirectionOutbound:
		r.ClientISN, r.ServerISN, r.ISNKnown = r.sndBase, r.rcvBase-1, true
	case DirectionInbound:
		r.ClientISN, r.ServerISN, r.ISNKnown = r.rcvBase-1, r.sndBase-1, true
	}
}

// UIDString is UID as the access logs write it, 16 hex digits, into b.
func UIDString(b *[16]byte, uid uint64) []byte {
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = hex[uid&0xf]
		uid >>= 4
	}
	return b[:]
}

// UID names the connection identically on both of its ends, on any node
// and through address and port translation: a mix (splitmix64's
// finaliser, a bijection) of the client's and the server's ISNs, so two
// connections share a UID only if they share both ISNs. ok is false when
// the ISNs are unknown.
func (r *Record) UID() (uid uint64, ok bool) {
	if !r.ISNKnown {
		return 0, false
	}
	z := uint64(r.ClientISN)<<32 | uint64(r.ServerISN)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31), true
}

// SetDirection gives a record of unknown direction the one its connection's
// open record carried. The acknowledged sequence space of a socket that
// connected counts its SYN, which the probe can only take out where it
// knows the direction: this takes it out of BytesSent. A record whose
// direction is known already is left as it is.
func (r *Record) SetDirection(d Direction) {
	if r.Direction != DirectionUnknown {
		return
	}
	r.Direction = d
	r.settle(d)
}

// SetClient says that the local end of a record of unknown direction is
// the client (FlagConnected on one of its connection's records): the SYN
// comes out of BytesSent and the ISNs are derived, the direction left as
// it is.
func (r *Record) SetClient() {
	r.Flags |= FlagConnected
	r.settle(DirectionOutbound)
}

// settle takes the SYN out of BytesSent for a client end and derives the
// ISNs, once the end is known.
func (r *Record) settle(end Direction) {
	if end == DirectionOutbound && r.synInSent && r.BytesSent > 0 {
		r.BytesSent--
	}
	if end != DirectionUnknown {
		r.synInSent = false
	}
	r.settleISNs(end)
}

// Duration is how long the connection has lived at this record, or 0 when
// its start is unknown.
func (r *Record) Duration() time.Duration {
	if r.Start.IsZero() {
		return 0
	}
	return r.Time.Sub(r.Start)
}

// CommString returns the command name without its NUL padding.
func (r *Record) CommString() string { return string(r.Command()) }

// Command is the command name without its NUL padding, in the record
// itself: for appending where a string would be one more allocation.
func (r *Record) Command() []byte {
	n := 0
	for n < len(r.Comm) && r.Comm[n] != 0 {
		n++
	}
	return r.Comm[:n]
}

// Refused is one local address's count of connects refused for want of
// a listener: the RSTs the kernel sent to SYNs that found no socket there.
type Refused struct {
	NetNS uint32
	Local netip.Addr
	Count uint64 // cumulative since the probe started
}

// Backlog is one listening socket's accept queue, as a walk saw it.
type Backlog struct {
	NetNS uint32
	// Local is the listening address; for a socket listening on any
	// address, an address of its namespace (ListenStats.Local), or
	// unspecified when the namespace has none.
	Local netip.Addr
	Port  uint16
	// Queued connections wait for accept(); Limit is the listen() backlog
	// (the queue holds up to Limit + 1).
	Queued, Limit uint32
}

// rawEventSize is the size of the C struct tcpconn_event.
const rawEventSize = int(unsafe.Sizeof(tcpconnTcpconnEvent{}))

// Address families of the record's Family: the probe's enum tcpconn_family.
const (
	afInet  = uint16(tcpconnTcpconnFamilyTCPCONN_AF_INET)
	afInet6 = uint16(tcpconnTcpconnFamilyTCPCONN_AF_INET6)
)

const (
	// noRTTSample is tcp_sock.rtt_min before any RTT was measured (a
	// handshake that failed): the kernel's minmax starts at ~0U.
	noRTTSample = ^uint32(0)
)

// decoder turns raw ring buffer samples into Records without allocating.
type decoder struct {
	// bootToWall is added to CLOCK_BOOTTIME nanoseconds to get Unix time.
	bootToWall int64
}

// decode fills rec from raw; it reports false when raw is not a full event.
func (d *decoder) decode(raw []byte, rec *Record) bool {
	if len(raw) < rawEventSize {
		return false
	}
	ev := (*tcpconnTcpconnEvent)(unsafe.Pointer(&raw[0]))

	rec.Kind = Kind(ev.Kind)
	rec.Direction = Direction(ev.Direction)
	rec.Flags = Flags(ev.Flags)
	rec.OldState = State(ev.OldState)
	rec.NewState = State(ev.NewState)
	rec.Time = d.wall(ev.TsNs)
	rec.Start = time.Time{}
	if ev.StartNs != 0 {
		rec.Start = d.wall(ev.StartNs)
	}
	rec.ConnID = ev.ConnId

	switch ev.Family {
	case afInet:
		rec.LocalAddr = netip.AddrFrom4([4]byte(ev.Saddr[:4]))
		rec.PeerAddr = netip.AddrFrom4([4]byte(ev.Daddr[:4]))
	case afInet6:
		// v4-mapped addresses of dual-stack sockets are reported as IPv4.
		rec.LocalAddr = netip.AddrFrom16(ev.Saddr).Unmap()
		rec.PeerAddr = netip.AddrFrom16(ev.Daddr).Unmap()
	default:
		rec.LocalAddr, rec.PeerAddr = netip.Addr{}, netip.Addr{}
	}
	rec.LocalPort = ev.Sport
	rec.PeerPort = ev.Dport

	rec.BytesSent = ev.BytesSent
	// An outbound socket's bytes_acked counts its SYN once the SYN-ACK
	// came (a listener's child never counts its SYN-ACK).
	rec.synInSent = false
	switch {
	case rec.Direction == DirectionOutbound && rec.BytesSent > 0:
		rec.BytesSent--
	case rec.Direction == DirectionUnknown:
		rec.synInSent = true
	}
	rec.BytesReceived = ev.BytesReceived
	rec.BytesRetrans = ev.BytesRetrans
	rec.Retransmits = ev.TotalRetrans
	rec.Lost = ev.Lost
	rec.SegsIn = ev.SegsIn
	rec.SegsOut = ev.SegsOut
	rec.RetransmitsByType = ev.Retrans
	rec.SRTT = time.Duration(ev.SrttUs) * time.Microsecond
	rec.RTTMin = 0
	if ev.RttMinUs != noRTTSample {
		rec.RTTMin = time.Duration(ev.RttMinUs) * time.Microsecond
	}
	rec.RTTVar = time.Duration(ev.RttvarUs) * time.Microsecond
	rec.sndBase, rec.rcvBase, rec.hasBases = ev.SndBase, ev.RcvBase, rec.Kind != KindFailure
	rec.ISNKnown = false
	switch {
	case rec.Direction != DirectionUnknown:
		rec.settleISNs(rec.Direction)
	case rec.Flags&FlagConnected != 0:
		rec.settle(DirectionOutbound)
	}
	rec.Handshake = 0
	switch {
	case rec.Kind != KindOpen && rec.Kind != KindFailure, rec.Flags&FlagAdopted != 0:
	case rec.Direction == DirectionOutbound && ev.StartNs != 0 && ev.TsNs > ev.StartNs:
		rec.Handshake = time.Duration(ev.TsNs - ev.StartNs)
	case rec.Direction == DirectionInbound && rec.Kind == KindOpen:
		rec.Handshake = rec.SRTT
	}
	rec.NetNS = ev.NetnsIno
	rec.PID = ev.Pid
	for i, c := range ev.Comm {
		rec.Comm[i] = byte(c)
	}
	rec.Errno = ev.SkErr
	return true
}

func (d *decoder) wall(bootNs uint64) time.Time {
	return time.Unix(0, int64(bootNs)+d.bootToWall)
}
