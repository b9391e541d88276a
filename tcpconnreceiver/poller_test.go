package tcpconnreceiver

import (
	"testing"
	"time"
)

type recordedPolls []time.Duration

func (r *recordedPolls) SetPollInterval(d time.Duration) { *r = append(*r, d) }

// The reader's wait doubles while the ring buffer stays empty, up to
// idle_poll_interval, never past the next report or while access-log
// records wait for a tick, and drops back at the next record.
func TestPollerBacksOff(t *testing.T) {
	var got recordedPolls
	ms := time.Millisecond
	p := &poller{src: &got, base: 50 * ms, max: time.Second, wait: 50 * ms}
	for range 6 {
		p.idle(false, -1)
	}
	p.idle(false, 300*ms) // a report walk due in 300ms
	p.idle(true, -1)      // access-log records wait for a tick
	p.idle(false, -1)
	p.busy()
	p.busy()
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, 300 * ms, 50 * ms, 100 * ms, 50 * ms}
	if len(got) != len(want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	// No back-off: idle_poll_interval at most poll_interval.
	got = nil
	p = &poller{src: &got, base: 50 * ms, max: 50 * ms, wait: 50 * ms}
	p.idle(false, -1)
	p.busy()
	if len(got) != 0 {
		t.Fatalf("waits %v, want none", got)
	}
}
