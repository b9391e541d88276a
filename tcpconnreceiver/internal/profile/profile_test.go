package profile

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// end is an identity whose every field names its end and field, so a
// label shows where it came from.
func end(name string) *identity.Identity {
	return &identity.Identity{
		Pod: name + ".pod", PodUID: name + ".uid", PodIP: name + ".ip", Namespace: name + ".ns", Workload: name + ".wl",
		WorkloadKind: "Deployment", Principal: name + ".principal", App: name + ".app", Version: name + ".version",
		CanonicalService: name + ".cs", CanonicalRevision: name + ".cr", Cluster: name + ".cluster",
		Service: name + ".svc", ServiceName: name + ".svcname", ServiceNamespace: name + ".svcns",
	}
}

// emit records one series per view of the profile for conn and returns
// what the builder emits.
func emit(t *testing.T, p *Profile, conn *conntable.Conn, e bpf.ErrorType) pmetric.Metrics {
	t.Helper()
	mb := metadata.NewMetricsBuilder(metadata.DefaultMetricsBuilderConfig(), receivertest.NewNopSettings(metadata.Type))
	ts := pcommon.NewTimestampFromTime(time.Unix(100, 0))
	v := aggregate.Values{Opened: 1, Closed: 1, Failed: 1, Counters: conntable.Counters{Sent: 10, Received: 20, Retransmits: 3, Lost: 4}}
	for _, view := range p.Views {
		var k aggregate.Key
		view.Project(conn, e, &k)
		view.Record(mb, ts, &k, &v)
		if view.RecordOpen != nil {
			view.RecordOpen(mb, ts, &k, 1)
		}
	}
	return mb.Emit()
}

// points returns the attributes of every point of the named metric.
func points(md pmetric.Metrics, name string) []map[string]any {
	var out []map[string]any
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				if m := ms.At(k); m.Name() == name && m.Type() == pmetric.MetricTypeSum {
					for d := range m.Sum().DataPoints().Len() {
						out = append(out, m.Sum().DataPoints().At(d).Attributes().AsRaw())
					}
				}
			}
		}
	}
	return out
}

func meshBlock(prefix, end string) map[string]any {
	return map[string]any{
		prefix + "_workload": end + ".wl", prefix + "_canonical_service": end + ".cs", prefix + "_canonical_revision": end + ".cr",
		prefix + "_workload_namespace": end + ".ns", prefix + "_principal": end + ".principal", prefix + "_app": end + ".app",
		prefix + "_version": end + ".version", prefix + "_cluster": end + ".cluster",
	}
}

func with(maps ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// Every label of every profile comes from the end and field it names, on
// both reporters.
func TestLabelsComeFromTheRightEnd(t *testing.T) {
	client, server := end("client"), end("server")
	outbound := &conntable.Conn{Direction: bpf.DirectionOutbound, Local: client, Peer: server}
	inbound := &conntable.Conn{Direction: bpf.DirectionInbound, Local: server, Peer: client}
	fixed := map[string]any{"request_protocol": "tcp", "response_flags": "-", "connection_security_policy": "unknown"}
	for _, tc := range []struct {
		conn     *conntable.Conn
		reporter string
	}{{outbound, "source"}, {inbound, "destination"}} {
		istioWant := with(meshBlock("source", "client"), meshBlock("destination", "server"), fixed, map[string]any{
			"reporter": tc.reporter, "destination_service": "server.svc", "destination_service_name": "server.svcname",
			"destination_service_namespace": "server.svcns",
		})
		md := emit(t, New(Options{Name: Istio}), tc.conn, bpf.ErrorNone)
		require.Len(t, points(md, "istio_tcp_connections_opened"), 1)
		assert.Equal(t, istioWant, points(md, "istio_tcp_connections_opened")[0], tc.reporter)

		kmeshWant := with(meshBlock("source", "client"), meshBlock("destination", "server"), fixed, map[string]any{
			"reporter": tc.reporter, "destination_pod_address": "server.ip", "destination_pod_name": "server.pod",
			"destination_pod_namespace": "server.ns",
		})
		md = emit(t, New(Options{Name: Kmesh, Workload: true, Service: true}), tc.conn, bpf.ErrorNone)
		require.Len(t, points(md, "kmesh_tcp_workload_connections_opened"), 1)
		assert.Equal(t, kmeshWant, points(md, "kmesh_tcp_workload_connections_opened")[0], tc.reporter)
		assert.Equal(t, istioWant, points(md, "kmesh_tcp_connections_opened")[0], tc.reporter)

		peer := tc.conn.Peer
		md = emit(t, New(Options{Name: OTel, Workload: true, Service: true}), tc.conn, bpf.ErrorNone)
		assert.Equal(t, []map[string]any{{
			"direction": tc.conn.Direction.String(), "network.type": "ipv4",
			"peer.workload": peer.Workload, "peer.workload.kind": "Deployment", "peer.namespace": peer.Namespace,
		}}, points(md, "tcp.connections.opened"))
		assert.Equal(t, []map[string]any{{
			"direction": tc.conn.Direction.String(), "destination.service.name": "server.svcname", "destination.service.namespace": "server.svcns",
		}}, points(md, "tcp.service.connections.opened"))
	}
}

// Istio's bytes are swapped on reporter=source, like ztunnel's.
func TestMeshBytesFollowZtunnel(t *testing.T) {
	value := func(md pmetric.Metrics, name string) int64 {
		m := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		for i := range m.Len() {
			if m.At(i).Name() == name {
				return m.At(i).Sum().DataPoints().At(0).IntValue()
			}
		}
		t.Fatalf("%s not emitted", name)
		return 0
	}
	client, server := end("client"), end("server")
	// The local end sent 10 and received 20.
	out := emit(t, New(Options{Name: Istio}), &conntable.Conn{Direction: bpf.DirectionOutbound, Local: client, Peer: server}, bpf.ErrorNone)
	assert.Equal(t, int64(20), value(out, "istio_tcp_sent_bytes"), "reporter=source: what the server sent")
	assert.Equal(t, int64(10), value(out, "istio_tcp_received_bytes"))
	in := emit(t, New(Options{Name: Istio}), &conntable.Conn{Direction: bpf.DirectionInbound, Local: server, Peer: client}, bpf.ErrorNone)
	assert.Equal(t, int64(10), value(in, "istio_tcp_sent_bytes"), "reporter=destination: what the server (local) sent")
	assert.Equal(t, int64(20), value(in, "istio_tcp_received_bytes"))
}

func TestFailureSeries(t *testing.T) {
	conn := &conntable.Conn{Direction: bpf.DirectionOutbound, Local: end("client"), Peer: end("server")}
	md := emit(t, New(Options{Name: Istio}), conn, bpf.ErrorRefused)
	p := points(md, "istio_tcp_connections_failed")
	require.Len(t, p, 1)
	assert.Equal(t, "UF", p[0]["response_flags"])
	assert.Empty(t, points(md, "istio_tcp_connections_opened"), "a failure series records only failures")
	md = emit(t, New(Options{Name: OTel, Workload: true}), conn, bpf.ErrorTimedOut)
	assert.Equal(t, "timed_out", points(md, "tcp.connections.failed")[0]["error.type"])
	assert.Empty(t, points(md, "tcp.connections.open"))
	for _, e := range bpf.ErrorTypes {
		assert.NotZero(t, ErrorType(e), "error type %v has no error.type value", e)
	}
	for _, v := range []aggregate.ViewKind{aggregate.ViewWorkload, aggregate.ViewService} {
		assert.NotZero(t, ViewAttribute(v))
	}
}

func TestNarrowed(t *testing.T) {
	mc := metadata.DefaultMetricsBuilderConfig()
	assert.False(t, Narrowed(&mc), "defaults")
	mc.Metrics.TCPBytesSent.EnabledAttributes = append(mc.Metrics.TCPBytesSent.EnabledAttributes, metadata.TCPBytesSentMetricAttributeKeyPeerAddress)
	assert.False(t, Narrowed(&mc), "an opt-in attribute added")
	mc.Metrics.IstioTCPSentBytes.EnabledAttributes = mc.Metrics.IstioTCPSentBytes.EnabledAttributes[1:]
	assert.True(t, Narrowed(&mc), "an attribute removed")
}

// TestOTelResets: the otel workload view reports system.network.tcp.resets
// by the end that sent the reset, once a series has seen one; istio and
// kmesh keep their metrics.
func TestOTelResets(t *testing.T) {
	conn := &conntable.Conn{Direction: bpf.DirectionInbound, Local: end("local"), Peer: end("peer")}
	mb := metadata.NewMetricsBuilder(metadata.DefaultMetricsBuilderConfig(), receivertest.NewNopSettings(metadata.Type))
	ts := pcommon.NewTimestampFromTime(time.Unix(100, 0))
	p := New(Options{Name: OTel, Workload: true})
	var k aggregate.Key
	p.Views[0].Project(conn, bpf.ErrorNone, &k)
	p.Views[0].Record(mb, ts, &k, &aggregate.Values{Closed: 3})
	assert.Empty(t, points(mb.Emit(), "system.network.tcp.resets"), "no point before a reset")

	p.Views[0].Record(mb, ts, &k, &aggregate.Values{Closed: 3, ResetsReceived: 2, ResetsSent: 1})
	got := points(mb.Emit(), "system.network.tcp.resets")
	require.Len(t, got, 2)
	causes := map[any]bool{}
	for _, a := range got {
		causes[a["tcp.close.cause"]] = true
		assert.Equal(t, "peer.wl", a["peer.workload"])
		assert.Equal(t, "inbound", a["direction"])
	}
	assert.Equal(t, map[any]bool{"reset_received": true, "reset_sent": true}, causes)

	for _, name := range []string{Istio, Kmesh} {
		p := New(Options{Name: name, Workload: true, Service: true})
		assert.Empty(t, points(emit(t, p, conn, bpf.ErrorNone), "system.network.tcp.resets"), name)
	}
}

// TestCrossZone: the otel profile counts the bytes of connections whose
// ends are in two known zones, each way, per peer workload and zone; the
// local zone goes on the Resource. Same-zone connections and ends of
// unknown zone are not counted. The mesh profiles keep their label sets.
func TestCrossZone(t *testing.T) {
	zoned := func(name, zone string) *identity.Identity { id := end(name); id.Zone = zone; return id }
	p := New(Options{Name: OTel, Workload: true, Service: true})
	var cz *View
	for i := range p.Views {
		if p.Views[i].Kind == aggregate.ViewCrossZone {
			cz = &p.Views[i]
		}
	}
	require.NotNil(t, cz, "no cross-zone view")
	for _, tc := range []struct {
		local, peer string
		want        bool
	}{{"zone-a", "zone-b", true}, {"zone-a", "zone-a", false}, {"", "zone-b", false}, {"zone-a", "", false}} {
		c := &conntable.Conn{Local: zoned("local", tc.local), Peer: zoned("peer", tc.peer), Direction: bpf.DirectionOutbound}
		assert.Equal(t, tc.want, cz.Keep(c), "%s -> %s", tc.local, tc.peer)
	}

	c := &conntable.Conn{Local: zoned("local", "zone-a"), Peer: zoned("peer", "zone-b"), Direction: bpf.DirectionInbound}
	md := emit(t, p, c, bpf.ErrorNone)
	assert.ElementsMatch(t, []map[string]any{
		{"network.io.direction": "transmit", "peer.workload": "peer.wl", "peer.workload.kind": "Deployment", "peer.namespace": "peer.ns", "peer.zone": "zone-b"},
		{"network.io.direction": "receive", "peer.workload": "peer.wl", "peer.workload.kind": "Deployment", "peer.namespace": "peer.ns", "peer.zone": "zone-b"},
	}, points(md, "tcp.bytes.cross_zone"))
	var k aggregate.Key
	cz.Project(c, bpf.ErrorNone, &k)
	rb := metadata.NewResourceBuilder(metadata.DefaultResourceAttributesConfig())
	p.LocalResource(rb, &k)
	zone, ok := rb.Emit().Attributes().Get("cloud.availability_zone")
	require.True(t, ok)
	assert.Equal(t, "zone-a", zone.Str())
	md = emit(t, p, c, bpf.ErrorRefused)
	assert.Empty(t, points(md, "tcp.bytes.cross_zone"), "failures carry no bytes")

	off := metadata.DefaultMetricsBuilderConfig()
	off.Metrics.TCPBytesCrossZone.Enabled = false
	for _, v := range New(Options{Name: OTel, Workload: true, Metrics: &off}).Views {
		assert.NotEqual(t, aggregate.ViewCrossZone, v.Kind, "the view is kept for a metric turned off")
	}
	for _, name := range []string{Istio, Kmesh} {
		for _, v := range New(Options{Name: name, Workload: true, Service: true}).Views {
			assert.NotEqual(t, aggregate.ViewCrossZone, v.Kind, name)
			md := emit(t, &Profile{Views: []View{v}}, c, bpf.ErrorNone)
			rms := md.ResourceMetrics()
			for i := range rms.Len() {
				ms := rms.At(i).ScopeMetrics().At(0).Metrics()
				for j := range ms.Len() {
					for _, attrs := range points(md, ms.At(j).Name()) {
						for key, val := range attrs {
							assert.NotContains(t, key, "zone", name)
							assert.NotContains(t, val, "zone-", name)
						}
					}
				}
			}
		}
	}
}
