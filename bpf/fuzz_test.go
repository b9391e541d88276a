package bpf

import (
	"testing"
	"unsafe"
)

// FuzzDecode feeds arbitrary samples to the decoder: it must never panic,
// accept exactly the samples that hold a whole record, and keep every
// field it decodes within its type's range. Run with
// `go test -fuzz=FuzzDecode ./bpf/`.
func FuzzDecode(f *testing.F) {
	full := make([]byte, rawEventSize)
	f.Add(full)
	f.Add(full[:rawEventSize-1])
	f.Add([]byte{})
	ev := tcpconnTcpconnEvent{Family: afInet6, Kind: uint8(KindClose), StartNs: 1, TsNs: 2, SrttUs: ^uint32(0)}
	f.Add(rawEvent(ev))
	f.Fuzz(func(t *testing.T, raw []byte) {
		d := decoder{bootToWall: 1 << 60}
		var rec Record
		ok := d.decode(raw, &rec)
		if ok != (len(raw) >= rawEventSize) {
			t.Fatalf("decode(%d bytes) = %v", len(raw), ok)
		}
		if !ok {
			return
		}
		ev := (*tcpconnTcpconnEvent)(unsafe.Pointer(&raw[0]))
		sent := ev.BytesSent
		if rec.Direction == DirectionOutbound && sent > 0 {
			sent-- // the SYN
		}
		if rec.BytesSent != sent || rec.LocalPort != ev.Sport || rec.PeerPort != ev.Dport {
			t.Fatalf("fields not carried: %+v", rec)
		}
		_ = rec.Kind.String()
		_ = rec.Direction.String()
		_ = rec.NewState.String()
		_ = rec.CommString()
		_ = rec.Duration()
	})
}
