package tcpconnreceiver

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/fixture"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// scriptedSource plays fixed records as the probe would: it hands out what
// it holds, then ErrNoData, and after Stop whatever is left, then ErrStopped.
type scriptedSource struct {
	mu      sync.Mutex
	recs    []bpf.Record
	stopped bool
	closed  bool
	stats   bpf.Stats
	// live, when not nil, is what a report walk sees; walks counts them.
	live  []bpf.Record
	walks int
	// refused is what Refused reports.
	refused []bpf.Refused
	// listeners tell the start-up walk the direction of what it adopts.
	listeners *bpf.Listeners
	// listen is what Listen reports, backlogs what Backlogs does.
	listen   []bpf.ListenStats
	backlogs []bpf.Backlog
	// onRead, when set, is called (under mu) for each record read.
	onRead func()
}

func (s *scriptedSource) Backlogs(fn func(bpf.Backlog)) {
	s.mu.Lock()
	bs := append([]bpf.Backlog{}, s.backlogs...)
	s.mu.Unlock()
	for _, b := range bs {
		fn(b)
	}
}

func (s *scriptedSource) Listen(fn func(bpf.ListenStats)) error {
	s.mu.Lock()
	listen := append([]bpf.ListenStats{}, s.listen...)
	s.mu.Unlock()
	for _, ls := range listen {
		fn(ls)
	}
	return nil
}

func (s *scriptedSource) Refused(fn func(bpf.Refused)) error {
	s.mu.Lock()
	refused := append([]bpf.Refused{}, s.refused...)
	s.mu.Unlock()
	for _, rf := range refused {
		fn(rf)
	}
	return nil
}

func (s *scriptedSource) WalkStart(visit func(*bpf.Record)) (int, error) {
	s.mu.Lock()
	l := s.listeners
	s.mu.Unlock()
	return s.Walk(func(rec *bpf.Record) {
		if l != nil && rec.Direction == bpf.DirectionUnknown {
			rec.SetDirection(l.Direction(rec.LocalAddr, rec.LocalPort))
		}
		visit(rec)
	})
}

func (s *scriptedSource) setLive(recs ...bpf.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live = append([]bpf.Record{}, recs...)
}

func (s *scriptedSource) CanWalk() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live == nil {
		return bpf.ErrNotSupported
	}
	return nil
}

func (s *scriptedSource) Walk(visit func(*bpf.Record)) (int, error) {
	s.mu.Lock()
	live := append([]bpf.Record{}, s.live...)
	s.walks++
	s.mu.Unlock()
	for i := range live {
		visit(&live[i])
	}
	return len(live), nil
}

func (s *scriptedSource) walkCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.walks
}

func (s *scriptedSource) push(recs ...bpf.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, recs...)
	s.stats.Emitted += uint64(len(recs))
}

func (s *scriptedSource) Read(rec *bpf.Record) error {
	s.mu.Lock()
	if len(s.recs) > 0 {
		s.take(rec)
		s.mu.Unlock()
		return nil
	}
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return bpf.ErrStopped
	}
	time.Sleep(time.Millisecond)
	return bpf.ErrNoData
}

// ReadNow is Read without the wait; after Stop, Read hands out the rest.
func (s *scriptedSource) ReadNow(rec *bpf.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return bpf.ErrStopped
	case len(s.recs) == 0:
		return bpf.ErrNoData
	}
	s.take(rec)
	return nil
}

func (s *scriptedSource) take(rec *bpf.Record) {
	*rec = s.recs[0]
	s.recs = s.recs[1:]
	if s.onRead != nil {
		s.onRead()
	}
}

func (s *scriptedSource) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	return nil
}

func (s *scriptedSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *scriptedSource) Stats() (bpf.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats, nil
}

// pipelines is one receiver instance wired to a metrics and a logs sink.
type pipelines struct {
	rcv     *tcpconnReceiver
	src     *scriptedSource
	metrics *consumertest.MetricsSink
	logs    *consumertest.LogsSink
}

// startScripted creates the receiver through its factory for both signals,
// with the scripted source in place of the probe, and starts it.
func startScripted(t *testing.T, cfg *Config, resolver ...identity.Resolver) *pipelines {
	t.Helper()
	return startScriptedSource(t, cfg, &scriptedSource{}, resolver...)
}

// The scripted records carry fixed past timestamps: series expiry, which
// compares them with the wall clock, is turned off.
func startScriptedSource(t *testing.T, cfg *Config, src *scriptedSource, resolver ...identity.Resolver) *pipelines {
	t.Helper()
	return startScriptedAs(t, cfg, src, src, resolver...)
}

// startScriptedAs is startScriptedSource with as, a source built on src,
// in place of the probe.
func startScriptedAs(t *testing.T, cfg *Config, src *scriptedSource, as recordSource, resolver ...identity.Resolver) *pipelines {
	t.Helper()
	cfg.SeriesExpiry = 0
	f := NewFactory()
	set := receivertest.NewNopSettings(metadata.Type)
	p := &pipelines{src: src, metrics: new(consumertest.MetricsSink), logs: new(consumertest.LogsSink)}
	mr, err := f.CreateMetrics(context.Background(), set, cfg, p.metrics)
	require.NoError(t, err)
	lr, err := f.CreateLogs(context.Background(), set, cfg, p.logs)
	require.NoError(t, err)
	require.Same(t, mr, lr, "metrics and logs must share one receiver")
	p.rcv = mr.(*tcpconnReceiver)
	p.rcv.open = func(bpf.Options) (recordSource, error) { return as, nil }
	if len(resolver) > 0 {
		p.rcv.resolver = resolver[0]
	}
	require.NoError(t, mr.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, lr.Start(context.Background(), componenttest.NewNopHost()))
	return p
}

func (p *pipelines) shutdown(t *testing.T) {
	t.Helper()
	require.NoError(t, p.rcv.Shutdown(context.Background()))
	require.NoError(t, p.rcv.Shutdown(context.Background()), "second shutdown from the other pipeline")
}

// The shared fixture under the names the tests here use.
var (
	t0         = fixture.T0
	clientAddr = fixture.ClientAddr
	serverAddr = fixture.ServerAddr
)

type staticResolver = fixture.StaticResolver

func fixedRecords() []bpf.Record    { return fixture.Records() }
func fixedResolver() staticResolver { return fixture.Resolver() }
