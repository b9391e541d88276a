package tcpconnreceiver

import (
	"fmt"
	"testing"
	"time"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/cidrfilter"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// BenchmarkWalkApply is the reader's side of one report walk at 10k and
// 100k open connections, both ends on the node (20k and 200k update
// records, as BenchmarkWalk in package bpf reads them): the address
// filter, the connection table and the series of every known connection
// (pods with their full identities), as each walk after the first
// applies them. `make bench-walk`.
func BenchmarkWalkApply(b *testing.B) {
	for _, conns := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			cfg := createDefaultConfig()
			r := &tcpconnReceiver{pipeline: pipeline{
				agg:    aggregate.New(profile.New(cfg.profileOptions()).Specs(), cfg.limits()),
				track:  conntable.New(fixedResolver(), true, false),
				filter: cidrfilter.New(FilterConfig{IncludeCIDRs: []string{"10.0.0.0/8"}}),
			}}
			recs := walkRecords(conns)
			walk := func() {
				r.track.BeginWalk(false)
				for i := range recs {
					recs[i].BytesSent++
					rec := recs[i]
					r.handle(&rec)
				}
				r.agg.Forget(r.track.EndWalk())
			}
			for i := range recs {
				open := recs[i]
				open.Kind, open.Start = bpf.KindOpen, t0
				open.Direction = bpf.DirectionOutbound
				if i%2 == 1 {
					open.Direction = bpf.DirectionInbound
				}
				r.handle(&open)
			}
			walk()
			b.ReportAllocs()
			for b.Loop() {
				walk()
			}
		})
	}
}

// walkRecords are the update records of conns connections from the
// fixture's client pod to its server's Service port, both ends: the
// client's at even indexes, the server's after each.
func walkRecords(conns int) []bpf.Record {
	client, server := clientAddr, serverAddr
	recs := make([]bpf.Record, 0, 2*conns)
	for i := range conns {
		c := bpf.Record{Kind: bpf.KindUpdate, ConnID: uint64(2*i + 1), Time: t0.Add(time.Second), LocalAddr: client, PeerAddr: server,
			LocalPort: uint16(1024 + i%60000), PeerPort: 8080, NewState: bpf.StateEstablished}
		s := c
		s.ConnID++
		s.LocalAddr, s.PeerAddr, s.LocalPort, s.PeerPort = server, client, c.PeerPort, c.LocalPort
		recs = append(recs, c, s)
	}
	return recs
}
