package tcpconnreceiver

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metricemit"
)

// readLoop is the only reader of the probe; it ends when the probe is
// stopped and drained, so records produced before Shutdown are delivered.
// It also applies the report walks, which read the kernel on a goroutine
// of their own (follow), so that updates and closes of one connection are
// handled in order by one writer.
func (r *tcpconnReceiver) readLoop() {
	defer r.wg.Done()
	defer close(r.readerDone)
	if r.batcher != nil {
		defer r.batcher.Close()
	}
	reports := r.startReports()
	next := time.Now().Add(r.cfg.ReportInterval)
	poll := r.newPoller()
	var rec bpf.Record
	for {
		err := r.src.Read(&rec)
		switch {
		case err == nil:
			poll.busy()
			r.recordsRead.Add(1)
			r.handle(&rec)
			if reports && !rec.Time.Before(next) {
				next = r.report(next, rec.Time)
			}
		case errors.Is(err, bpf.ErrNoData):
			now := time.Now()
			if r.batcher != nil {
				r.batcher.Tick(now)
			}
			if reports && !now.Before(next) {
				next = r.report(next, now)
			}
			pending := r.batcher != nil && r.batcher.Pending()
			if reports {
				poll.idle(pending, next.Sub(time.Now()))
			} else {
				poll.idle(pending, -1)
			}
		case errors.Is(err, bpf.ErrStopped):
			return
		default:
			r.set.Logger.Error("tcpconn probe reader stopped", zap.Error(err))
			return
		}
	}
}

// pollSetter is a source whose wait for records can change between Reads
// (bpf.Probe).
type pollSetter interface {
	SetPollInterval(time.Duration)
}

// poller backs the reader's wait off while the ring buffer stays empty:
// it doubles from probe.poll_interval up to probe.idle_poll_interval, and
// drops back at the next record, or while access-log records wait for
// their batch's tick. It never waits past the next report walk. Records
// past wakeup_bytes wake the reader whatever its wait.
type poller struct {
	src       pollSetter // nil: the source polls at its own pace
	base, max time.Duration
	wait      time.Duration
}

func (r *tcpconnReceiver) newPoller() *poller {
	ps, _ := r.src.(pollSetter)
	base := r.cfg.Probe.PollInterval
	return &poller{src: ps, base: base, max: max(base, r.cfg.Probe.IdlePollInterval), wait: base}
}

func (p *poller) set(d time.Duration) {
	if p.src != nil && d != p.wait {
		p.wait = d
		p.src.SetPollInterval(d)
	}
}

// busy: a record came.
func (p *poller) busy() {
	if p.wait != p.base {
		p.set(p.base)
	}
}

// idle: a wait ended with no record. pending says access-log records wait
// for a tick; untilReport is how long to the next report walk (negative:
// none).
func (p *poller) idle(pending bool, untilReport time.Duration) {
	d := min(2*p.wait, p.max)
	if pending {
		d = p.base
	}
	if untilReport >= 0 {
		d = min(d, max(untilReport, p.base))
	}
	p.set(d)
}

// startReports runs the start-up walk, which adopts the connections open
// before the receiver started and takes their counters as the baseline (or
// sets them aside, without adopt_existing). It reports whether periodic
// reports will run.
func (r *tcpconnReceiver) startReports() bool {
	if r.cfg.ReportInterval <= 0 {
		r.scanNode() // once: without walks, namespaces made later are resolved by address, and the node has the addresses it had at start
		return false
	}
	if err := r.src.CanWalk(); err != nil {
		r.set.Logger.Warn("periodic reports of open connections are off", zap.Error(err))
		r.scanNode()
		return false
	}
	n, err := r.walk(true)
	if err != nil {
		r.set.Logger.Warn("start-up report walk failed", zap.Error(err))
	}
	r.set.Logger.Info("connections open at start", zap.Int("sockets", n), zap.Bool("adopted", r.cfg.AdoptExisting))
	return true
}

// walk runs one report walk through handle, draining the ring buffer
// meanwhile (follow), then takes the connections it found gone off the
// open counts. baseline marks the start-up walk.
func (r *tcpconnReceiver) walk(baseline bool) (int, error) {
	r.scanNode()
	r.track.BeginWalk(baseline)
	walk := r.src.Walk
	if baseline {
		walk = r.src.WalkStart
	}
	res := r.follow(walk)
	gone := r.track.EndWalk()
	if r.agg != nil {
		r.agg.Forget(gone)
		r.countRefused()
		r.countListen(baseline)
		r.keepBacklogs()
	}
	r.lostConns.Store(r.track.Lost())
	return res.n, res.err
}

// countRefused adds what each local address refused since the previous
// walk to its workload series: the server's side of refused connects,
// which make no record. Addresses the probe no longer holds are dropped,
// so the map stays as small as the probe's.
func (r *tcpconnReceiver) countRefused() {
	now := time.Now()
	prev := r.refused
	next := make(map[refusedKey]uint64, len(prev))
	err := r.src.Refused(func(rf bpf.Refused) {
		k := refusedKey{rf.NetNS, rf.Local}
		next[k] = rf.Count
		d := rf.Count
		if p, ok := prev[k]; ok && p <= rf.Count {
			d = rf.Count - p
		}
		if d == 0 || !r.filter.KeepAddr(rf.Local) {
			return
		}
		c := r.track.RefusedConn(rf.Local, now)
		r.agg.AddRefused(&c, d, now)
	})
	if err != nil {
		r.set.Logger.Warn("read refused connects", zap.Error(err))
		return
	}
	r.refused = next
}

// countListen adds what each network namespace's listeners overflowed and
// dropped since the previous walk to the workload series of the pod its
// address names. The start-up walk takes the counters as they are, a
// baseline: what came before the receiver is not new. A namespace first
// seen later (a pod started since) counts from zero.
func (r *tcpconnReceiver) countListen(baseline bool) {
	now := time.Now()
	prev := r.listen
	next := make(map[uint32]bpf.ListenStats, len(prev))
	err := r.src.Listen(func(ls bpf.ListenStats) {
		next[ls.NetNS] = ls
		if baseline {
			return
		}
		var p bpf.ListenStats
		if old, ok := prev[ls.NetNS]; ok {
			p = old
		}
		d := func(cur, old uint64) uint64 {
			if cur < old {
				return 0
			}
			return cur - old
		}
		overflows, drops := d(ls.Overflows, p.Overflows), d(ls.Drops, p.Drops)
		if overflows == 0 && drops == 0 {
			return
		}
		// A namespace with no global address names no pod.
		if !ls.Local.IsValid() || !r.filter.KeepAddr(ls.Local) {
			return
		}
		c := r.track.ListenerConn(ls.Local, now)
		r.agg.AddListen(&c, overflows, drops, now)
	})
	if err != nil {
		r.set.Logger.Warn("read listener counters", zap.Error(err))
	}
	r.listen = next
}

// keepBacklogs keys the listening sockets' accept queues of this walk by
// their pod, for the next flush (see metricemit.Backlog).
func (r *tcpconnReceiver) keepBacklogs() {
	if r.project == nil {
		return
	}
	now := time.Now()
	var bs []metricemit.Backlog
	r.src.Backlogs(func(b bpf.Backlog) {
		if !b.Local.IsValid() || b.Local.IsUnspecified() || b.Local.IsLoopback() ||
			!r.filter.KeepAddr(b.Local) {
			return // names no pod
		}
		c := r.track.ListenerConn(b.Local, now)
		mb := metricemit.Backlog{Port: b.Port, Queued: b.Queued, Limit: b.Limit}
		r.project(&c, bpf.ErrorNone, &mb.Key)
		bs = append(bs, mb)
	})
	r.backlogsMu.Lock()
	r.backlogs = bs
	r.backlogsMu.Unlock()
}

// report walks every tracked connection: update records for the metrics
// (and the logs, if enabled), and the open count made exact. It returns
// when the next report is due: on a fixed schedule, so intervals do not
// drift by the poll delay; after a stall it starts again from now.
func (r *tcpconnReceiver) report(due, now time.Time) time.Time {
	start := time.Now()
	n, err := r.walk(false)
	if err != nil {
		r.set.Logger.Warn("report walk failed", zap.Error(err))
	}
	r.logNATFailures()
	r.set.Logger.Debug("report walk", zap.Int("connections", n), zap.Duration("took", time.Since(start)))
	if next := due.Add(r.cfg.ReportInterval); next.After(now) {
		return next
	}
	return now.Add(r.cfg.ReportInterval)
}

// handle takes one record through the data path: the address filter, the
// connection table, then the metrics and the access logs.
func (r *tcpconnReceiver) handle(rec *bpf.Record) {
	if !r.filter.Keep(rec) {
		r.filtered.Add(1)
		return
	}
	o, keep := r.track.Observe(rec)
	if gone := r.track.TakeEvicted(); gone != nil {
		r.evictedConns.Store(r.track.Evicted())
		if r.agg != nil {
			r.agg.Forget(gone)
		}
	}
	if !keep {
		return
	}
	if r.agg != nil {
		r.agg.Add(rec, &o)
	}
	if r.batcher != nil && r.batcher.Wants(rec) {
		if reason, drop := r.logFilter.Drop(rec, &o); drop {
			r.logsFiltered[reason].Add(1)
			return
		}
		r.batcher.Add(rec, &o, rec.Time)
	}
}
