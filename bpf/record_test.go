package bpf

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func rawEvent(ev tcpconnTcpconnEvent) []byte {
	b := make([]byte, rawEventSize)
	*(*tcpconnTcpconnEvent)(unsafe.Pointer(&b[0])) = ev
	return b
}

func TestDecode(t *testing.T) {
	d := decoder{bootToWall: 1_700_000_000_000_000_000}
	ev := tcpconnTcpconnEvent{
		TsNs: 5_000_000_000, StartNs: 2_000_000_000, ConnId: 9,
		BytesSent: 1<<40 + 1, BytesReceived: 5000, BytesRetrans: 3, TotalRetrans: 2, Lost: 1,
		SegsIn: 10, SegsOut: 11, SrttUs: 120, RttMinUs: 80, RttvarUs: 30,
		NetnsIno: 4026531840, Pid: 77, SkErr: 0,
		Sport: 40000, Dport: 8080, Family: afInet,
		Kind: uint8(KindClose), Direction: uint8(DirectionOutbound), OldState: uint8(StateFinWait2), NewState: uint8(StateClose),
		Flags: uint8(FlagFinReceived),
	}
	copy(ev.Saddr[:], []byte{10, 0, 0, 2})
	copy(ev.Daddr[:], []byte{10, 0, 0, 1})
	for i, c := range "curl" {
		ev.Comm[i] = int8(c)
	}
	var rec Record
	require.True(t, d.decode(rawEvent(ev), &rec))
	assert.Equal(t, KindClose, rec.Kind)
	assert.Equal(t, DirectionOutbound, rec.Direction)
	assert.Equal(t, netip.MustParseAddr("10.0.0.2"), rec.LocalAddr)
	assert.Equal(t, netip.MustParseAddr("10.0.0.1"), rec.PeerAddr)
	assert.Equal(t, uint16(40000), rec.LocalPort)
	assert.Equal(t, uint16(8080), rec.PeerPort)
	assert.Equal(t, uint64(1<<40), rec.BytesSent, "64-bit counters do not wrap at 4 GiB; the outbound SYN is taken out")
	assert.Equal(t, 3*time.Second, rec.Duration())
	assert.Equal(t, time.Unix(0, 1_700_000_005_000_000_000), rec.Time)
	assert.Equal(t, 120*time.Microsecond, rec.SRTT)
	assert.Equal(t, "curl", rec.CommString())
	assert.Equal(t, []byte("curl"), rec.Command())
	assert.Equal(t, FlagFinReceived, rec.Flags)

	// A dual-stack socket's v4-mapped address is reported as IPv4.
	ev.Family = afInet6
	copy(ev.Saddr[:], netip.MustParseAddr("::ffff:10.0.0.2").AsSlice())
	copy(ev.Daddr[:], netip.MustParseAddr("fd00::1").AsSlice())
	require.True(t, d.decode(rawEvent(ev), &rec))
	assert.Equal(t, netip.MustParseAddr("10.0.0.2"), rec.LocalAddr)
	assert.Equal(t, netip.MustParseAddr("fd00::1"), rec.PeerAddr)

	// An adopted connection has no start.
	ev.StartNs = 0
	require.True(t, d.decode(rawEvent(ev), &rec))
	assert.True(t, rec.Start.IsZero())
	assert.Zero(t, rec.Duration())

	assert.False(t, d.decode(make([]byte, rawEventSize-1), &rec), "short sample")

	// A failed handshake has no RTT sample: the kernel's minimum is ~0U.
	ev.RttMinUs = ^uint32(0)
	require.True(t, d.decode(rawEvent(ev), &rec))
	assert.Zero(t, rec.RTTMin)
}

func BenchmarkDecode(b *testing.B) {
	d := decoder{}
	ev := tcpconnTcpconnEvent{Family: afInet6, Kind: uint8(KindClose), Sport: 1, Dport: 2, BytesSent: 100}
	raw := rawEvent(ev)
	var rec Record
	b.ReportAllocs()
	for b.Loop() {
		d.decode(raw, &rec)
	}
}

// TestSetDirectionTakesTheSYNOut: a close or update record does not say
// its direction, and its acknowledged sequence space counts the SYN of an
// outbound socket: SetDirection takes it out, once, and only for outbound.
func TestSetDirectionTakesTheSYNOut(t *testing.T) {
	d := decoder{}
	ev := tcpconnTcpconnEvent{Family: afInet, Kind: uint8(KindClose), BytesSent: 101}
	for _, c := range []struct {
		dir  Direction
		want uint64
	}{{DirectionOutbound, 100}, {DirectionInbound, 101}, {DirectionUnknown, 101}} {
		var rec Record
		require.True(t, d.decode(rawEvent(ev), &rec))
		rec.SetDirection(c.dir)
		assert.Equal(t, c.want, rec.BytesSent, "%v", c.dir)
		assert.Equal(t, c.dir, rec.Direction)
		rec.SetDirection(c.dir)
		assert.Equal(t, c.want, rec.BytesSent, "%v, twice", c.dir)
	}
	// An open record knows its direction: decoded without the SYN, and
	// left alone after.
	ev.Kind, ev.Direction, ev.BytesSent = uint8(KindOpen), uint8(DirectionOutbound), 1
	var rec Record
	require.True(t, d.decode(rawEvent(ev), &rec))
	assert.Zero(t, rec.BytesSent)
	rec.SetDirection(DirectionOutbound)
	assert.Zero(t, rec.BytesSent)
}

// TestISNsAndUID: the two ends' records of one connection, as the probe
// fills them (client: snd_una - bytes_acked is its ISN; server: its ISN +
// 1; both: rcv_nxt - bytes_received is the peer's ISN + 1), give the same
// ISNs and UID, across the 32-bit wrap; a failure has none.
func TestISNsAndUID(t *testing.T) {
	const cISN, sISN = 0xfffffff0, 7
	d := decoder{}
	client := tcpconnTcpconnEvent{Family: afInet, Kind: uint8(KindClose), SndBase: cISN, RcvBase: sISN + 1}
	server := tcpconnTcpconnEvent{Family: afInet, Kind: uint8(KindClose), SndBase: sISN + 1, RcvBase: cISN + 1}
	var c, s Record
	require.True(t, d.decode(rawEvent(client), &c))
	require.True(t, d.decode(rawEvent(server), &s))
	_, ok := c.UID()
	assert.False(t, ok, "no direction yet")
	c.SetDirection(DirectionOutbound)
	s.SetDirection(DirectionInbound)
	for _, r := range []Record{c, s} {
		assert.True(t, r.ISNKnown)
		assert.Equal(t, uint32(cISN), r.ClientISN)
		assert.Equal(t, uint32(sISN), r.ServerISN)
	}
	cu, _ := c.UID()
	su, _ := s.UID()
	assert.Equal(t, cu, su)
	var b [16]byte
	assert.Len(t, string(UIDString(&b, 1)), 16)
	assert.Equal(t, "0000000000000001", string(UIDString(&b, 1)))

	s.ServerISN++
	su, _ = s.UID()
	assert.NotEqual(t, cu, su, "another connection")

	client.Kind, client.Direction = uint8(KindFailure), uint8(DirectionOutbound)
	require.True(t, d.decode(rawEvent(client), &c))
	assert.False(t, c.ISNKnown, "a failed handshake has no UID")
}
