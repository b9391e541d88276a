package conntable

import (
	"testing"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
)

// BenchmarkObserveConnection is the table's work for one connection's
// life: its open, three reports and its close. "retransmitting" has its
// retransmits by type grow at each record, so that every record takes
// and gives back its counts beside the table (Table.typed); "clean" never
// retransmits, as most connections.
func BenchmarkObserveConnection(b *testing.B) {
	for _, retransmitting := range []bool{false, true} {
		name := map[bool]string{false: "clean", true: "retransmitting"}[retransmitting]
		b.Run(name, func(b *testing.B) {
			tr := New(identity.AddressOnly{}, true, false)
			rec := bpf.Record{LocalAddr: fixture.ClientAddr, PeerAddr: fixture.ServerAddr, LocalPort: 40000, PeerPort: 8080, Direction: bpf.DirectionOutbound, Start: t0}
			kinds := [...]bpf.Kind{bpf.KindOpen, bpf.KindUpdate, bpf.KindUpdate, bpf.KindUpdate, bpf.KindClose}
			b.ReportAllocs()
			id := uint64(0)
			for b.Loop() {
				id++
				for i, k := range kinds {
					rec.Kind, rec.ConnID, rec.BytesSent = k, id, uint64(i)*1000
					if retransmitting {
						rec.RetransmitsByType[bpf.RetransmitFast] = uint32(i)
						rec.Retransmits = uint64(i)
					}
					tr.Observe(&rec)
				}
			}
		})
	}
}
