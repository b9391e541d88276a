package tcpconnreceiver

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/bpf"
)

// closeDuringWalk is a scripted probe whose armed walk sees a connection
// that closes while the walk runs: the close goes into the ring buffer
// when the walk starts, and the walk hands the connection's update (made
// before the close) over only once the reader has read the close, as when
// the walk reads the kernel ahead of the reader.
type closeDuringWalk struct {
	*scriptedSource
	update, close bpf.Record
	armed         atomic.Bool
	// readDuring says, once the armed walk ran, whether the reader read
	// the close while it ran.
	readDuring chan bool
}

func (s *closeDuringWalk) Walk(visit func(*bpf.Record)) (int, error) {
	if !s.armed.CompareAndSwap(true, false) {
		return s.scriptedSource.Walk(visit)
	}
	read := make(chan struct{})
	s.mu.Lock()
	s.walks++
	s.recs = append(s.recs, s.close)
	s.onRead = func() {
		s.onRead = nil
		close(read)
	}
	s.mu.Unlock()
	select {
	case <-read:
		s.readDuring <- true
	case <-time.After(2 * time.Second):
		s.readDuring <- false
	}
	u := s.update
	visit(&u)
	return 1, nil
}

// TestWalkDrainsTheRingAndKeepsOrder: the reader reads the ring buffer
// while a walk runs, and applies a close it read there after the walk's
// older update of that connection: the connection is counted once, and
// neither lingers in the open count nor ends up lost.
func TestWalkDrainsTheRingAndKeepsOrder(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.FlushInterval = time.Hour
	cfg.ReportInterval = 100 * time.Millisecond

	recs := fixedRecords()
	open := recs[0] // outbound open of connection 1
	update := open
	update.Kind, update.Direction, update.Start = bpf.KindUpdate, bpf.DirectionUnknown, time.Time{}
	update.Time, update.BytesSent = t0.Add(time.Second), 300
	closing := recs[2] // its close, half a second later: 100000 bytes in all
	require.True(t, closing.Time.After(update.Time))

	src := &closeDuringWalk{scriptedSource: &scriptedSource{}, update: update, close: closing, readDuring: make(chan bool, 1)}
	src.setLive()
	p := startScriptedAs(t, cfg, src.scriptedSource, src)
	waitRead := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool { return p.rcv.recordsRead.Load() >= n }, 5*time.Second, time.Millisecond)
	}
	p.src.push(open)
	waitRead(1)
	src.armed.Store(true)
	select {
	case during := <-src.readDuring:
		assert.True(t, during, "the close was read while the walk ran")
	case <-time.After(10 * time.Second):
		t.Fatal("no walk")
	}
	// Two more walks without it: a connection left behind would be lost.
	target := src.walkCount() + 3
	require.Eventually(t, func() bool { return src.walkCount() >= target }, 5*time.Second, time.Millisecond)
	p.shutdown(t)

	md := p.metrics.AllMetrics()[0]
	assert.Equal(t, int64(100000), findSum(t, md, "tcp.bytes.sent"), "its exact total, once")
	assert.Equal(t, int64(1), findSum(t, md, "tcp.connections.opened"))
	assert.Equal(t, int64(1), findSum(t, md, "tcp.connections.closed"))
	assert.Equal(t, int64(0), findSum(t, md, "tcp.connections.open"))
	assert.Equal(t, int64(0), findSum(t, md, "tcpconn.connections.lost"))
	assert.Zero(t, p.rcv.track.Len(), "nothing left in the connection table")
}
