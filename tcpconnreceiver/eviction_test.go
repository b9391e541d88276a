package tcpconnreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/cidrfilter"
)

// A full connection table is emptied: the evicted connections leave the
// open count and are counted, instead of staying open for ever.
func TestEvictionLeavesTheOpenCount(t *testing.T) {
	cfg := createDefaultConfig()
	h := newAggHarness(cfg, fixedResolver())
	r := &tcpconnReceiver{pipeline: pipeline{agg: h.agg, track: h.track, filter: cidrfilter.New(FilterConfig{})}}
	r.track.SetLimit(2)
	open := fixedRecords()[0]
	for id := range uint64(3) {
		rec := open
		rec.ConnID, rec.LocalPort = id+1, uint16(41000+id)
		r.handle(&rec)
	}
	md := h.emit(t0.Add(time.Minute))
	assert.Equal(t, int64(3), findSum(t, md, "tcp.connections.opened"))
	assert.Equal(t, int64(1), findSum(t, md, "tcp.connections.open"), "the two evicted ones are no longer open")
	assert.Equal(t, int64(2), r.evictedConns.Load())
	assert.Equal(t, 1, r.track.Len())
}
