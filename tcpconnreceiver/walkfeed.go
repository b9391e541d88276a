package tcpconnreceiver

import (
	"errors"
	"time"

	"github.com/tcpconn/tcpconn/bpf"
)

// A walk at 100k open connections takes a few hundred milliseconds, most
// of it in the kernel's iterator. Run on the reader's goroutine it left
// the ring buffer undrained all that time, and a burst of connections
// meanwhile overflowed it. The walk now reads the iterator on a goroutine
// of its own and hands its records over in batches; the reader applies
// them, still the only writer of the connection table, and drains the
// ring buffer between them.
const (
	// walkBatchLen records per batch; walkBatches batches, reused from
	// walk to walk: the walk reads ahead of the reader by at most
	// walkBatches batches, then waits.
	walkBatchLen = 256
	walkBatches  = 4
	// walkDrainEvery bounds how long the ring buffer waits while the walk
	// hands nothing over: a namespace with few connections still costs a
	// scan of the kernel's whole socket hash.
	walkDrainEvery = 5 * time.Millisecond
	// walkDrainMax records are read from the ring buffer before the next
	// batch of the walk, when one is ready: the ring buffer goes first
	// (what overflows it is lost), but the walk still ends under a
	// sustained burst.
	walkDrainMax = 1024
)

// walkFeed carries a walk's records from its goroutine to the reader. The
// records and the batches are reused: nothing is allocated per record.
type walkFeed struct {
	free, full chan []bpf.Record
	// cur is the batch the walk is filling (the walk's goroutine only).
	cur []bpf.Record

	// The reader's side. held are records read from the ring buffer
	// during the walk that wait for the walk to pass their time (see
	// follow), from next on; rec is where the ring buffer is read into.
	held []bpf.Record
	next int
	rec  bpf.Record
}

func newWalkFeed() *walkFeed {
	f := &walkFeed{free: make(chan []bpf.Record, walkBatches), full: make(chan []bpf.Record, walkBatches)}
	for range walkBatches {
		f.free <- make([]bpf.Record, 0, walkBatchLen)
	}
	return f
}

// visit is the walk's visitor, on the walk's goroutine: it waits for a
// free batch when the reader is walkBatches behind.
func (f *walkFeed) visit(rec *bpf.Record) {
	if f.cur == nil {
		f.cur = <-f.free
	}
	f.cur = append(f.cur, *rec)
	if len(f.cur) == cap(f.cur) {
		f.full <- f.cur
		f.cur = nil
	}
}

// end hands the last batch over, on the walk's goroutine, before the walk
// says it is done. full holds every batch, so this never waits.
func (f *walkFeed) end() {
	switch {
	case len(f.cur) > 0:
		f.full <- f.cur
	case f.cur != nil:
		f.free <- f.cur
	}
	f.cur = nil
}

type walkResult struct {
	n   int
	err error
}

// follow runs walk on a goroutine of its own and applies its batches as
// they come, draining the ring buffer between them, until the walk has
// ended and its last batch is applied; it returns what walk returned.
//
// A record from the ring buffer is applied once the walk's records have
// passed its time, and held (in order) until then: the walk reads a
// socket under its lock, so its update of a connection is older than the
// connection's close, and must be applied first. A close applied first
// would leave the update to count, or to start tracking, a connection that
// is gone (bpf.Probe.Walk). The walk's records come in time order, one
// socket after the other.
func (r *tcpconnReceiver) follow(walk func(func(*bpf.Record)) (int, error)) walkResult {
	if r.feed == nil {
		r.feed = newWalkFeed()
	}
	f := r.feed
	done := make(chan walkResult, 1)
	go func() {
		n, err := walk(f.visit)
		f.end()
		done <- walkResult{n, err}
	}()
	tick := time.NewTicker(walkDrainEvery)
	defer tick.Stop()
	// past: the time of the walk's last record applied; the walk's later
	// records are no older.
	var past time.Time
	ring := true
	for {
		empty := true
		if ring {
			ring, empty = r.drainRing(past, walkDrainMax)
		}
		if r.releaseHeld(past) {
			empty = false
		}
		wait := tick.C
		if !empty {
			wait = goOn // more to read or release: a batch if one is ready, no wait
		}
		select {
		case b := <-f.full:
			past = r.applyWalk(b, past)
		case res := <-done:
			r.endWalk(past, ring)
			return res
		case now := <-wait:
			if empty && r.batcher != nil {
				r.batcher.Tick(now)
			}
		}
	}
}

// goOn is always ready: follow's wait when it has more to do.
var goOn = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// afterEveryWalk is later than any record: once the walk has ended, every
// record held for it may go.
var afterEveryWalk = time.Unix(1<<40, 0)

// endWalk applies the batches the walk handed over before it ended, then
// the records held after its last one, still reading the ring buffer
// between them: half as many as it applies, so that it ends.
func (r *tcpconnReceiver) endWalk(past time.Time, ring bool) {
	f := r.feed
	for len(f.full) > 0 {
		past = r.applyWalk(<-f.full, past)
	}
	for f.next < len(f.held) {
		if ring {
			ring, _ = r.drainRing(afterEveryWalk, walkDrainMax/2)
		}
		r.releaseHeld(afterEveryWalk)
	}
}

// applyWalk applies one batch of the walk and gives it back. It returns
// the new past.
func (r *tcpconnReceiver) applyWalk(b []bpf.Record, past time.Time) time.Time {
	if last := b[len(b)-1].Time; last.After(past) {
		past = last
	}
	for i := range b {
		r.handle(&b[i])
	}
	r.feed.free <- b[:0]
	return past
}

// drainRing reads what the ring buffer holds, up to limit records, and
// applies each at once when nothing read before it is held and the walk
// has passed its time, or holds it. empty says the ring buffer was found
// empty; ok is false once it can no longer be read (stopped, or failed):
// the read loop then reads it, and says why.
func (r *tcpconnReceiver) drainRing(past time.Time, limit int) (ok, empty bool) {
	f := r.feed
	for range limit {
		err := r.src.ReadNow(&f.rec)
		switch {
		case err == nil:
		case errors.Is(err, bpf.ErrNoData):
			return true, true
		default:
			return false, true
		}
		r.recordsRead.Add(1)
		if f.next == len(f.held) && f.rec.Time.Before(past) {
			r.handle(&f.rec)
			continue
		}
		f.held = append(f.held, f.rec)
	}
	return true, false
}

// releaseHeld applies up to walkDrainMax held records that the walk has
// passed, in the order they were read, so that the ring buffer is read
// between them: they may be many, when the walk spent long where it had
// little to report. It reports whether more are ready.
func (r *tcpconnReceiver) releaseHeld(past time.Time) bool {
	f := r.feed
	for range walkDrainMax {
		if f.next == len(f.held) {
			f.held, f.next = f.held[:0], 0
			return false
		}
		if !f.held[f.next].Time.Before(past) {
			return false
		}
		r.handle(&f.held[f.next])
		f.next++
	}
	return f.next < len(f.held) && f.held[f.next].Time.Before(past)
}
