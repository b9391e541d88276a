package accesslog

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

func TestLogFilterReasons(t *testing.T) {
	web := &identity.Identity{Namespace: "web"}
	shop := &identity.Identity{Namespace: "shop"}
	long := bpf.Record{Kind: bpf.KindClose, ConnID: 1, Start: t0, Time: t0.Add(2 * time.Second), BytesSent: 500}
	short := long
	short.Time = t0.Add(time.Millisecond)
	failure := bpf.Record{Kind: bpf.KindFailure, ConnID: 2, Errno: int32(syscall.ECONNREFUSED)}
	reset := long
	reset.Errno = int32(syscall.ECONNRESET)
	reset.Time = short.Time
	tiny := long
	tiny.BytesSent = 10

	obs := func(local, peer *identity.Identity) *conntable.Observation {
		return &conntable.Observation{Local: local, Peer: peer}
	}
	for _, tc := range []struct {
		name   string
		cfg    FilterConfig
		rec    bpf.Record
		o      *conntable.Observation
		reason metadata.AttributeReason
		drop   bool
	}{
		{"no filter", FilterConfig{}, long, obs(web, shop), 0, false},
		{"failures only drops a close", FilterConfig{FailuresOnly: true}, long, obs(web, shop), metadata.AttributeReasonFailuresOnly, true},
		{"failures only keeps a failure", FilterConfig{FailuresOnly: true}, failure, obs(web, shop), 0, false},
		{"failures only keeps a reset", FilterConfig{FailuresOnly: true}, reset, obs(web, shop), 0, false},
		{"include matches the peer", FilterConfig{IncludeNamespaces: []string{"shop"}}, long, obs(web, shop), 0, false},
		{"include matches neither end", FilterConfig{IncludeNamespaces: []string{"db"}}, long, obs(web, shop), metadata.AttributeReasonNamespace, true},
		{"exclude matches the local end", FilterConfig{ExcludeNamespaces: []string{"web"}}, long, obs(web, shop), metadata.AttributeReasonNamespace, true},
		{"exclude applies to failures too", FilterConfig{ExcludeNamespaces: []string{"web"}}, failure, obs(web, shop), metadata.AttributeReasonNamespace, true},
		{"min duration", FilterConfig{MinDuration: time.Second}, short, obs(web, shop), metadata.AttributeReasonMinDuration, true},
		{"min duration keeps a reset", FilterConfig{MinDuration: time.Second}, reset, obs(web, shop), 0, false},
		{"min bytes", FilterConfig{MinBytes: 100}, tiny, obs(web, shop), metadata.AttributeReasonMinBytes, true},
		{"min bytes passes", FilterConfig{MinBytes: 100}, long, obs(web, shop), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFilter(Config{Filter: tc.cfg, SamplingRatio: 1})
			reason, drop := f.Drop(&tc.rec, tc.o)
			assert.Equal(t, tc.drop, drop)
			assert.Equal(t, tc.reason, reason)
		})
	}
}

// Sampling keeps about the configured share of connections, all of a
// connection's records or none, and every failure.
func TestLogSampling(t *testing.T) {
	f := NewFilter(Config{SamplingRatio: 0.3})
	o := &conntable.Observation{Local: &identity.Identity{}, Peer: &identity.Identity{}}
	const n = 20000
	kept := 0
	for id := uint64(1); id <= n; id++ {
		id := id | 1<<48 // ids carry the CPU in their top bits
		rec := bpf.Record{Kind: bpf.KindOpen, ConnID: id}
		_, dropOpen := f.Drop(&rec, o)
		rec.Kind = bpf.KindClose
		reason, dropClose := f.Drop(&rec, o)
		assert.Equal(t, dropOpen, dropClose, "connection %d split", id)
		if !dropClose {
			kept++
		} else {
			assert.Equal(t, metadata.AttributeReasonSampling, reason)
		}
		rec.Kind, rec.Errno = bpf.KindFailure, int32(syscall.ETIMEDOUT)
		_, dropFailure := f.Drop(&rec, o)
		assert.False(t, dropFailure, "failures are never sampled out")
	}
	assert.InDelta(t, 0.3, float64(kept)/n, 0.02)

	none := NewFilter(Config{SamplingRatio: 0})
	_, drop := none.Drop(&bpf.Record{Kind: bpf.KindClose, ConnID: 5}, o)
	assert.True(t, drop)
}
