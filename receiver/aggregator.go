package receiver

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// aggregator keeps every view's series between flushes. The reader adds
// records, the flusher emits; one mutex is enough at one node's rates
// (see BenchmarkAggregate).
type aggregator struct {
	mu         sync.Mutex
	cfg        *Config
	views      []*view
	delta      bool
	histograms bool
	started    time.Time
	ref        connRef
	// version is the scope version the builder writes, for the histograms.
	version string
	// peerAddr and peerPort: opted-in otel workload attributes.
	peerAddr, peerPort bool
	addrs              map[netip.Addr]string
}

func newAggregator(cfg *Config, started time.Time) *aggregator {
	return &aggregator{
		cfg: cfg, views: newViews(cfg), delta: cfg.Temporality == TemporalityDelta, started: started,
		histograms: cfg.Profile == ProfileOTel && cfg.Histograms,
		peerAddr:   cfg.Profile == ProfileOTel && optedIn(&cfg.MetricsBuilderConfig, "peer.address"),
		peerPort:   cfg.Profile == ProfileOTel && optedIn(&cfg.MetricsBuilderConfig, "peer.port"),
		addrs:      map[netip.Addr]string{},
	}
}

// optedIn reports whether any otel workload metric enables the attribute.
func optedIn(mc *metadata.MetricsBuilderConfig, attr string) bool {
	m := &mc.Metrics
	for _, enabled := range [][]string{
		keys(m.TCPConnectionsOpened.EnabledAttributes), keys(m.TCPConnectionsClosed.EnabledAttributes),
		keys(m.TCPConnectionsFailed.EnabledAttributes), keys(m.TCPConnectionsOpen.EnabledAttributes),
		keys(m.TCPBytesSent.EnabledAttributes), keys(m.TCPBytesReceived.EnabledAttributes),
		keys(m.TCPRetransmits.EnabledAttributes), keys(m.TCPPacketsLost.EnabledAttributes),
	} {
		if slices.Contains(enabled, attr) {
			return true
		}
	}
	return false
}

func keys[K ~string](in []K) []string {
	out := make([]string, len(in))
	for i, k := range in {
		out[i] = string(k)
	}
	return out
}

// project fills the view's scratch key for a connection.
func (a *aggregator) project(v *view, c *connRef, errType metadata.AttributeErrorType) *seriesKey {
	k := &v.scratch
	*k = seriesKey{}
	v.project(c, errType, k)
	if v.kind == metadata.AttributeViewWorkload {
		if a.peerAddr {
			k.peerAddress = a.addrString(c.peerAddr)
		}
		if a.peerPort {
			k.peerPort = c.peerPort
		}
	}
	return k
}

// addrString formats an address once; later series reuse the string.
func (a *aggregator) addrString(ip netip.Addr) string {
	if s, ok := a.addrs[ip]; ok {
		return s
	}
	if len(a.addrs) >= a.cfg.SeriesLimit {
		return "overflow"
	}
	s := ip.String()
	a.addrs[ip] = s
	return s
}

// add counts one record: its event, and what it adds to the connection's
// counters since its previous record (reports during its life, the rest
// at close), so the sum over a connection is exactly its total.
func (a *aggregator) add(rec *bpf.Record, o *observation) {
	var errType metadata.AttributeErrorType
	if rec.Kind == bpf.KindFailure {
		errType = errorTypeAttr(rec.Errno)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Scratch values under the lock: a key passed to a view's projection
	// through a function value would otherwise escape, once per record.
	c := &a.ref
	*c = refOf(rec, o.local, o.peer)
	for _, v := range a.views {
		k := a.project(v, c, errType)
		s := v.get(k, rec.Time)
		switch rec.Kind {
		case bpf.KindFailure:
			s.v.failed++
			continue
		case bpf.KindOpen:
			s.v.opened++
		case bpf.KindClose:
			s.v.closed++
			if a.histograms && v.kind == metadata.AttributeViewWorkload {
				if !rec.Start.IsZero() {
					s.duration.observe(durationBounds, rec.Duration().Seconds())
				}
				if rec.SRTT > 0 {
					s.rtt.observe(rttBounds, rec.SRTT.Seconds())
				}
			}
		}
		if o.becameOpen {
			s.v.open++
		}
		if o.wasOpen {
			s.v.open--
		}
		s.v.sent += int64(o.delta.sent)
		s.v.received += int64(o.delta.received)
		s.v.retrans += int64(o.delta.retrans)
		s.v.lost += int64(o.delta.lost)
	}
}

// forget takes connections whose close was lost off the open counts.
func (a *aggregator) forget(conns []connRef) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range conns {
		for _, v := range a.views {
			k := a.project(v, &conns[i], 0)
			if s := v.series[*k]; s != nil {
				s.v.open--
			}
		}
	}
}

// emit writes every series into md through the metrics builder: per-series
// start times, delta or cumulative values, the otel profile's local end on
// the Resource and its histograms. base is the receiver's own Resource.
func (a *aggregator) emit(mb *metadata.MetricsBuilder, now time.Time, base pcommon.Resource, selfMetrics func(ts pcommon.Timestamp)) pmetric.Metrics {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts := pcommon.NewTimestampFromTime(now)
	if a.cfg.SeriesExpiry > 0 {
		for _, v := range a.views {
			v.expire(now.Add(-a.cfg.SeriesExpiry))
		}
	}
	hist := pmetric.NewMetrics()
	if a.cfg.Profile == ProfileOTel {
		a.emitOTel(mb, ts, now, base, hist)
	} else {
		for _, v := range a.views {
			fam := &istioFamily
			if a.cfg.Profile == ProfileKmesh {
				fam = &kmeshServiceFamily
				if v.kind == metadata.AttributeViewWorkload {
					fam = &kmeshWorkloadFamily
				}
			}
			for k, s := range v.series {
				d := a.advance(mb, s, now)
				fam.record(mb, ts, &k, d)
			}
		}
	}
	// Self-metrics are cumulative since the receiver started.
	mb.Reset(metadata.WithStartTime(pcommon.NewTimestampFromTime(a.started)))
	for _, v := range a.views {
		mb.RecordTcpconnSeriesOverflowDataPoint(ts, v.overflowed, v.kind)
	}
	selfMetrics(ts)
	res := pcommon.NewResource()
	base.CopyTo(res)
	md := mb.Emit(metadata.WithResource(res))
	if a.delta {
		markDelta(md)
	}
	hist.ResourceMetrics().MoveAndAppendTo(md.ResourceMetrics())
	return md
}

// advance returns what a series reports at this flush (its cumulative
// values, or what changed since the previous flush), and sets the builder's
// start time for it.
func (a *aggregator) advance(mb *metadata.MetricsBuilder, s *series, now time.Time) values {
	start := s.start
	d := s.v
	if a.delta {
		if !s.flushed.IsZero() {
			start = s.flushed
		}
		d = s.v.sub(s.emitted)
		s.emitted = s.v
	}
	s.flushed = now
	mb.Reset(metadata.WithStartTime(pcommon.NewTimestampFromTime(start)))
	return d
}

// emitOTel groups series by local end, one Resource each.
func (a *aggregator) emitOTel(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, now time.Time, base pcommon.Resource, hist pmetric.Metrics) {
	type entry struct {
		k    seriesKey
		s    *series
		view metadata.AttributeView
	}
	groups := map[endLabels][]entry{}
	for _, v := range a.views {
		for k, s := range v.series {
			groups[k.local] = append(groups[k.local], entry{k, s, v.kind})
		}
	}
	for local, entries := range groups {
		rb := mb.NewResourceBuilder()
		setLocalResource(rb, &local)
		res := rb.Emit()
		base.Attributes().Range(func(key string, val pcommon.Value) bool {
			val.CopyTo(res.Attributes().PutEmpty(key))
			return true
		})
		var hm pmetric.MetricSlice
		haveHist := false
		for _, e := range entries {
			cur := e.s.v
			histStart := e.s.start
			if a.delta && !e.s.flushed.IsZero() {
				histStart = e.s.flushed
			}
			d := a.advance(mb, e.s, now)
			if e.view == metadata.AttributeViewWorkload {
				recordOTelWorkload(mb, ts, &e.k, d)
				mb.Reset(metadata.WithStartTime(pcommon.NewTimestampFromTime(e.s.start)))
				recordOTelOpen(mb, ts, &e.k, cur)
				if a.histograms && e.k.errorType == 0 && (e.s.duration.count > 0 || e.s.rtt.count > 0) {
					if !haveHist {
						haveHist = true
						rm := hist.ResourceMetrics().AppendEmpty()
						res.CopyTo(rm.Resource())
						sm := rm.ScopeMetrics().AppendEmpty()
						sm.Scope().SetName(metadata.ScopeName)
						sm.Scope().SetVersion(a.version)
						hm = sm.Metrics()
					}
					appendHistograms(hm, &e.k, e.s, pcommon.NewTimestampFromTime(histStart), ts, a.delta)
				}
			} else {
				recordOTelService(mb, ts, &e.k, d)
			}
		}
		mb.EmitForResource(metadata.WithResource(res))
	}
}

// appendHistograms adds the series' duration and RTT histograms to ms,
// merging into existing metrics of the same name: cumulative since start,
// or with delta what was observed since the previous flush (the histograms
// start again empty).
func appendHistograms(ms pmetric.MetricSlice, k *seriesKey, s *series, start, ts pcommon.Timestamp, delta bool) {
	temporality := pmetric.AggregationTemporalityCumulative
	if delta {
		temporality = pmetric.AggregationTemporalityDelta
	}
	for _, h := range []struct {
		name, desc string
		bounds     []float64
		data       *histogram
	}{
		{"tcp.connection.duration", "otel profile: how long connections lived, observed at close.", durationBounds, &s.duration},
		{"tcp.rtt", "otel profile: smoothed round-trip time of connections (tcp_sock.srtt_us >> 3), observed at close.", rttBounds, &s.rtt},
	} {
		if h.data.count == 0 {
			continue
		}
		var m pmetric.Metric
		for i := range ms.Len() {
			if ms.At(i).Name() == h.name {
				m = ms.At(i)
			}
		}
		if m == (pmetric.Metric{}) {
			m = ms.AppendEmpty()
			m.SetName(h.name)
			m.SetDescription(h.desc)
			m.SetUnit("s")
			m.SetEmptyHistogram().SetAggregationTemporality(temporality)
		}
		dp := m.Histogram().DataPoints().AppendEmpty()
		dp.SetStartTimestamp(start)
		dp.SetTimestamp(ts)
		dp.SetCount(h.data.count)
		dp.SetSum(h.data.sum)
		dp.ExplicitBounds().FromRaw(h.bounds)
		dp.BucketCounts().FromRaw(h.data.counts)
		a := dp.Attributes()
		a.PutStr("direction", k.direction.String())
		a.PutStr("network.type", k.networkType.String())
		a.PutStr("peer.workload", k.peer.workload)
		a.PutStr("peer.workload.kind", k.peer.kind)
		a.PutStr("peer.namespace", k.peer.namespace)
		if delta {
			h.data.reset()
		}
	}
}

// markDelta switches the connection metrics (not the self-metrics, which
// stay cumulative) to delta temporality; their values already are deltas.
func markDelta(md pmetric.Metrics) {
	forEachMetric(md, func(m pmetric.Metric) {
		if m.Type() == pmetric.MetricTypeSum && m.Sum().IsMonotonic() && !strings.HasPrefix(m.Name(), "tcpconn.") {
			m.Sum().SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
		}
	})
}

// forEachMetric calls fn for every metric in md.
func forEachMetric(md pmetric.Metrics, fn func(pmetric.Metric)) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				fn(ms.At(k))
			}
		}
	}
}

// errorTypeAttr classifies the socket error of a failed handshake.
func errorTypeAttr(errno int32) metadata.AttributeErrorType {
	switch syscall.Errno(errno) {
	case syscall.ECONNREFUSED:
		return metadata.AttributeErrorTypeRefused
	case syscall.ETIMEDOUT:
		return metadata.AttributeErrorTypeTimedOut
	case syscall.ECONNRESET:
		return metadata.AttributeErrorTypeReset
	case syscall.EHOSTUNREACH, syscall.ENETUNREACH:
		return metadata.AttributeErrorTypeUnreachable
	case 0:
		return metadata.AttributeErrorTypeAborted
	}
	return metadata.AttributeErrorTypeOther
}
