package receiver

import (
	"context"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
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
		*rec = s.recs[0]
		s.recs = s.recs[1:]
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
	p.rcv.open = func(bpf.Options) (recordSource, error) { return p.src, nil }
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

var (
	t0         = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clientAddr = netip.MustParseAddr("10.1.0.2")
	serverAddr = netip.MustParseAddr("10.1.0.1")
)

// fixedRecords is one of each record kind, on both ends, in both families.
func fixedRecords() []bpf.Record {
	out := bpf.Record{
		Direction: bpf.DirectionOutbound, ConnID: 1, Start: t0,
		LocalAddr: clientAddr, LocalPort: 40000, PeerAddr: serverAddr, PeerPort: 8080,
		NetNS: 4026531840, PID: 4242, Comm: [16]byte{'c', 'u', 'r', 'l'},
	}
	in := bpf.Record{
		Direction: bpf.DirectionInbound, ConnID: 2, Start: t0.Add(100 * time.Microsecond),
		LocalAddr: serverAddr, LocalPort: 8080, PeerAddr: clientAddr, PeerPort: 40000,
		NetNS: 4026531999,
	}
	openOut, openIn := out, in
	openOut.Kind, openOut.OldState, openOut.NewState, openOut.Time = bpf.KindOpen, bpf.StateSynSent, bpf.StateEstablished, t0.Add(200*time.Microsecond)
	openIn.Kind, openIn.OldState, openIn.NewState, openIn.Time = bpf.KindOpen, bpf.StateSynRecv, bpf.StateEstablished, t0.Add(300*time.Microsecond)

	// As the probe sends them: start, direction and process come with the
	// open record only; the receiver carries them over.
	closeOut, closeIn := out, in
	closeOut.Start, closeOut.Direction, closeOut.PID, closeOut.Comm = time.Time{}, bpf.DirectionUnknown, 0, [16]byte{}
	closeIn.Start, closeIn.Direction = time.Time{}, bpf.DirectionUnknown
	closeOut.Kind, closeOut.OldState, closeOut.NewState, closeOut.Time = bpf.KindClose, bpf.StateFinWait2, bpf.StateClose, t0.Add(1500*time.Millisecond)
	closeOut.Flags = bpf.FlagFinReceived
	closeOut.BytesSent, closeOut.BytesReceived, closeOut.Retransmits, closeOut.Lost = 100000, 5000, 2, 1
	closeOut.SRTT, closeOut.RTTMin = 120*time.Microsecond, 80*time.Microsecond
	closeIn.Kind, closeIn.OldState, closeIn.NewState, closeIn.Time = bpf.KindClose, bpf.StateLastAck, bpf.StateClose, t0.Add(1501*time.Millisecond)
	closeIn.Flags = bpf.FlagFinReceived
	closeIn.BytesSent, closeIn.BytesReceived = 5000, 100000
	closeIn.SRTT, closeIn.RTTMin = 110*time.Microsecond, 70*time.Microsecond

	refused := out
	refused.ConnID, refused.LocalPort, refused.PeerPort = 3, 40001, 8081
	refused.Kind, refused.OldState, refused.NewState = bpf.KindFailure, bpf.StateSynSent, bpf.StateClose
	refused.Time, refused.Errno = t0.Add(2*time.Second), int32(syscall.ECONNREFUSED)
	refused.Start = refused.Time.Add(-50 * time.Microsecond)

	timedOut := refused
	timedOut.ConnID, timedOut.LocalPort, timedOut.PeerAddr, timedOut.PeerPort = 4, 40002, netip.MustParseAddr("10.1.0.3"), 8082
	timedOut.Errno, timedOut.Time = int32(syscall.ETIMEDOUT), t0.Add(5*time.Second)
	timedOut.Start = t0.Add(2 * time.Second)

	reset := in
	reset.ConnID, reset.PeerPort = 5, 40003
	reset.Kind, reset.OldState, reset.NewState = bpf.KindClose, bpf.StateEstablished, bpf.StateClose
	reset.Time, reset.Errno, reset.BytesReceived = t0.Add(6*time.Second), int32(syscall.ECONNRESET), 10

	v6 := bpf.Record{
		Kind: bpf.KindClose, Direction: bpf.DirectionOutbound, ConnID: 6, Flags: bpf.FlagFinReceived,
		OldState: bpf.StateFinWait2, NewState: bpf.StateClose,
		Start: t0, Time: t0.Add(3 * time.Millisecond),
		LocalAddr: netip.MustParseAddr("fd00::2"), LocalPort: 50000, PeerAddr: netip.MustParseAddr("fd00::1"), PeerPort: 443,
		BytesSent: 1, BytesReceived: 2,
	}

	adopted := in
	adopted.ConnID, adopted.PeerPort, adopted.Flags = 7, 40004, bpf.FlagAdopted|bpf.FlagFinReceived
	adopted.Direction, adopted.Start = bpf.DirectionUnknown, time.Time{}
	adopted.Kind, adopted.OldState, adopted.NewState = bpf.KindClose, bpf.StateCloseWait, bpf.StateClose
	adopted.Time, adopted.BytesSent, adopted.BytesReceived = t0.Add(7*time.Second), 7, 9

	// A long-lived connection reported by a walk, still open.
	live := out
	live.ConnID, live.LocalPort = 8, 40005
	live.Kind, live.OldState, live.NewState = bpf.KindUpdate, bpf.StateEstablished, bpf.StateEstablished
	live.Time, live.BytesSent, live.BytesReceived, live.Retransmits = t0.Add(8*time.Second), 4096, 1024, 1
	live.SRTT, live.RTTMin = 150*time.Microsecond, 90*time.Microsecond

	return []bpf.Record{openOut, openIn, closeOut, closeIn, refused, timedOut, reset, v6, adopted, live}
}

// staticResolver knows a fixed set of pods. A key with port 8080 holds the
// identity of that pod as the destination of a service, used for server
// ends on that port.
type staticResolver map[netip.AddrPort]*identity.Identity

func (s staticResolver) Resolve(addr netip.Addr, port uint16, _ time.Time, role identity.Role) *identity.Identity {
	if role == identity.RoleServer {
		if id := s[netip.AddrPortFrom(addr, port)]; id != nil {
			return id
		}
	}
	return s[netip.AddrPortFrom(addr, 0)]
}

// withService adds the checkout service to a pod identity.
func withService(id *identity.Identity) *identity.Identity {
	c := *id
	c.Service, c.ServiceName, c.ServiceNamespace = "checkout.shop.svc.cluster.local", "checkout", "shop"
	return &c
}

func fixedResolver() staticResolver {
	r := staticResolver{
		netip.AddrPortFrom(clientAddr, 0): {
			Pod: "frontend-7c9d-abcde", PodUID: "uid-frontend", Namespace: "web", Node: "node-a",
			Workload: "frontend", WorkloadKind: "Deployment", ServiceAccount: "frontend",
			Principal: "spiffe://cluster.local/ns/web/sa/frontend", App: "frontend", Version: "v1",
			CanonicalService: "frontend", CanonicalRevision: "v1", Cluster: "Kubernetes",
		},
		netip.AddrPortFrom(serverAddr, 0): {
			Pod: "checkout-5d8f-xyz12", PodUID: "uid-checkout", Namespace: "shop", Node: "node-b",
			Workload: "checkout", WorkloadKind: "Deployment", ServiceAccount: "checkout",
			Principal: "spiffe://cluster.local/ns/shop/sa/checkout", App: "checkout", Version: "v2",
			CanonicalService: "checkout", CanonicalRevision: "v2", Cluster: "Kubernetes",
		},
	}
	r[netip.AddrPortFrom(serverAddr, 8080)] = withService(r[netip.AddrPortFrom(serverAddr, 0)])
	return r
}
