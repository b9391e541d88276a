// Package metricemit turns aggregated series into pdata metrics at each
// flush: temporality (cumulative since each series' start, or delta since
// the previous flush), per-series start times, the otel profile's
// Resource per local end, the histograms mdatagen cannot build, and the
// self-metrics beside them. What each series is called and labelled is
// internal/profile's; this package only arranges the records.
package metricemit

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// Emitter writes the series of an aggregator through one metrics builder.
// It is used by one goroutine at a time (the receiver's flusher).
type Emitter struct {
	mb      *metadata.MetricsBuilder
	prof    *profile.Profile
	delta   bool
	started time.Time
	// version is the scope version the builder writes, for the histograms.
	version string
	// base is the receiver's own Resource; self is the Resource of what
	// the collector reports of itself (see Options.Self).
	base, self pcommon.Resource
	// chunk: see Options.Chunk.
	chunk int
	// backlogs: the local ports' accept queues for the next Emit.
	backlogs []Backlog
}

// Backlog is one local port's accept queue: Key is the listener's series
// key in the workload view (its local end names the Resource).
type Backlog struct {
	Key           aggregate.Key
	Port          uint16
	Queued, Limit uint32
}

// SetBacklogs gives the accept queues the next Emit records (profiles with
// RecordBacklog only), replacing the previous ones. Entries of one local
// end and port are added up.
func (e *Emitter) SetBacklogs(bs []Backlog) { e.backlogs = bs }

// Options configure an Emitter.
type Options struct {
	Delta bool
	// Started is the start time of the self-metrics.
	Started time.Time
	// Version is the collector's version, the histograms' scope version.
	Version string
	// Resource is the receiver's own Resource (host, node), on every
	// series; per local end it is added to that end's attributes.
	Resource pcommon.Resource
	// Self is Resource plus the collector's own service.name and
	// service.instance.id: the Resource of the self-metrics in profiles
	// with a Resource per local end (otel), so an agent's own series are
	// told apart from its workloads' and from a gateway's; elsewhere the
	// self-metrics join the series on Resource. Empty: Resource.
	Self pcommon.Resource
	// Chunk, when positive, starts a new ResourceMetrics (with the same
	// Resource) every Chunk series on the shared Resource. The generated
	// builder looks for an equal data point among those recorded so far
	// before adding one, so a flush of n series costs n²: 1.4 s of CPU for
	// 4,100 istio series (BenchmarkScaleFlush). Only safe when every series
	// is a data point of its own (profile.Narrowed is false).
	Chunk int
}

// New returns an emitter of prof's series.
func New(mb *metadata.MetricsBuilder, prof *profile.Profile, opts Options) *Emitter {
	self := opts.Self
	if self == (pcommon.Resource{}) {
		self = opts.Resource
	}
	return &Emitter{mb: mb, prof: prof, delta: opts.Delta, started: opts.Started, version: opts.Version, base: opts.Resource, self: self, chunk: opts.Chunk}
}

// SelfMetrics records the receiver's own counters at ts.
type SelfMetrics func(mb *metadata.MetricsBuilder, ts pcommon.Timestamp)

// Emit writes every series of agg as of now, then the self-metrics (the
// views' overflow counts and what self records), which stay cumulative
// since the receiver started whatever the temporality.
func (e *Emitter) Emit(agg *aggregate.Aggregator, now time.Time, self SelfMetrics) pmetric.Metrics {
	ts := pcommon.NewTimestampFromTime(now)
	var md, hist pmetric.Metrics
	agg.Collect(now, func(views []*aggregate.View) {
		hist = pmetric.NewMetrics()
		if e.prof.LocalResource != nil {
			e.emitPerLocal(views, ts, now, hist)
		} else {
			e.emitShared(views, ts, now)
		}
		md = e.mb.Emit(metadata.WithResource(e.resource()))
		if e.delta {
			markDelta(md)
		}
		e.mb.Reset(metadata.WithStartTime(pcommon.NewTimestampFromTime(e.started)))
		for _, v := range views {
			e.mb.RecordTcpconnSeriesOverflowDataPoint(ts, v.Overflowed(), profile.ViewAttribute(v.Kind))
		}
	})
	self(e.mb, ts)
	selfMD := e.mb.Emit(metadata.WithResource(e.copyOf(e.self)))
	if e.prof.LocalResource == nil && md.ResourceMetrics().Len() > 0 {
		// The series went on the receiver's Resource: the self-metrics
		// join them there.
		dst := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		selfMD.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().MoveAndAppendTo(dst)
	} else {
		selfMD.ResourceMetrics().MoveAndAppendTo(md.ResourceMetrics())
	}
	hist.ResourceMetrics().MoveAndAppendTo(md.ResourceMetrics())
	return md
}

// resource is the receiver's Resource: that of the series no local end
// names (the ends the receiver could not name, or every series of the
// istio and kmesh profiles, whose Prometheus label sets are Istio's and
// Kmesh's exactly: the collector's service there would add job and
// instance).
func (e *Emitter) resource() pcommon.Resource { return e.copyOf(e.base) }

func (e *Emitter) copyOf(r pcommon.Resource) pcommon.Resource {
	res := pcommon.NewResource()
	r.CopyTo(res)
	return res
}

// advance returns what a series reports at this flush (its cumulative
// values, or what changed since the previous flush) and sets the
// builder's start time for it.
func (e *Emitter) advance(s *aggregate.Series, now time.Time) aggregate.Values {
	start := s.Start
	d := s.V
	if e.delta {
		if !s.Flushed.IsZero() {
			start = s.Flushed
		}
		d = s.V.Sub(s.Emitted)
		s.Emitted = s.V
	}
	s.Flushed = now
	e.mb.Reset(metadata.WithStartTime(pcommon.NewTimestampFromTime(start)))
	return d
}

// emitShared records every series on the receiver's Resource.
func (e *Emitter) emitShared(views []*aggregate.View, ts pcommon.Timestamp, now time.Time) {
	n := 0
	for i, v := range views {
		pv := &e.prof.Views[i]
		v.Range(func(k *aggregate.Key, s *aggregate.Series) {
			d := e.advance(s, now)
			pv.Record(e.mb, ts, k, &d)
			if n++; e.chunk > 0 && n%e.chunk == 0 {
				e.mb.EmitForResource(metadata.WithResource(e.resource()))
			}
		})
	}
}

// emitPerLocal groups series by local end, one Resource each.
func (e *Emitter) emitPerLocal(views []*aggregate.View, ts pcommon.Timestamp, now time.Time, hist pmetric.Metrics) {
	type entry struct {
		k    aggregate.Key
		s    *aggregate.Series
		view *profile.View
	}
	groups := map[profile.LocalEnd][]entry{}
	for i, v := range views {
		v.Range(func(k *aggregate.Key, s *aggregate.Series) {
			local := e.prof.LocalKey(k)
			groups[local] = append(groups[local], entry{*k, s, &e.prof.Views[i]})
		})
	}
	type queue struct{ queued, limit int64 }
	var ports map[profile.LocalEnd]map[uint16]queue // by local end, by port
	keys := map[profile.LocalEnd]aggregate.Key{}
	if e.prof.RecordBacklog != nil && len(e.backlogs) > 0 {
		ports = make(map[profile.LocalEnd]map[uint16]queue)
		for i := range e.backlogs {
			b := &e.backlogs[i]
			local := e.prof.LocalKey(&b.Key)
			if ports[local] == nil {
				ports[local] = map[uint16]queue{}
			}
			q := ports[local][b.Port]
			q.queued += int64(b.Queued)
			q.limit += int64(b.Limit)
			ports[local][b.Port] = q
			if _, ok := groups[local]; !ok {
				groups[local] = nil // a pod with listeners and no series
				keys[local] = b.Key
			}
		}
	}
	for local, entries := range groups {
		rb := e.mb.NewResourceBuilder()
		if len(entries) > 0 {
			e.prof.LocalResource(rb, &entries[0].k)
		} else {
			k := keys[local]
			e.prof.LocalResource(rb, &k)
		}
		res := rb.Emit()
		e.base.Attributes().Range(func(key string, val pcommon.Value) bool {
			val.CopyTo(res.Attributes().PutEmpty(key))
			return true
		})
		var hm pmetric.MetricSlice
		for _, en := range entries {
			cur := en.s.V
			histStart := en.s.Start
			if e.delta && !en.s.Flushed.IsZero() {
				histStart = en.s.Flushed
			}
			d := e.advance(en.s, now)
			en.view.Record(e.mb, ts, &en.k, &d)
			if en.view.RecordOpen != nil {
				// The open count is a level: always since the series' start.
				e.mb.Reset(metadata.WithStartTime(pcommon.NewTimestampFromTime(en.s.Start)))
				en.view.RecordOpen(e.mb, ts, &en.k, cur.Open)
			}
			if en.view.ViewSpec.Histograms && en.k.Error == 0 && hasObservations(en.view, en.s) {
				if hm == (pmetric.MetricSlice{}) {
					rm := hist.ResourceMetrics().AppendEmpty()
					res.CopyTo(rm.Resource())
					sm := rm.ScopeMetrics().AppendEmpty()
					sm.Scope().SetName(metadata.ScopeName)
					sm.Scope().SetVersion(e.version)
					hm = sm.Metrics()
				}
				e.appendHistograms(hm, en.view, &en.k, en.s, pcommon.NewTimestampFromTime(histStart), ts)
			}
		}
		if qs := ports[local]; len(qs) > 0 {
			e.mb.Reset(metadata.WithStartTime(pcommon.NewTimestampFromTime(now)))
			for port, q := range qs {
				e.prof.RecordBacklog(e.mb, ts, port, q.queued, q.limit)
			}
		}
		e.mb.EmitForResource(metadata.WithResource(res))
	}
}

// hasObservations reports whether any of the view's histograms of s has
// an observation to report.
func hasObservations(v *profile.View, s *aggregate.Series) bool {
	for _, h := range v.Histograms {
		if h.Of(s).Count > 0 {
			return true
		}
	}
	return false
}
