package profile

import (
	"slices"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// Slots of the otel profile's keys. The local end (raw values, empty when
// unknown and then left off the Resource) comes first, then the view's
// data-point labels.
const (
	localWorkload = iota
	localKind
	localNamespace
	localPod
	localPodUID
	localCanonicalService
	localCanonicalRevision
	localZone
	numLocal
)

// Workload view: the peer ("unknown" when not resolved).
const (
	peerWorkload = numLocal + iota
	peerKind
	peerNamespace
)

// Cross-zone view: the peer and its zone.
const (
	czPeerWorkload = numLocal + iota
	czPeerKind
	czPeerNamespace
	czPeerZone
)

// Service view: the destination service.
const (
	svcName = numLocal + iota
	svcNamespace
)

// The otel profile's histograms, built by hand (mdatagen builds none):
// their names, also their switches under metrics:.
const (
	HistogramConnectionDuration = "tcp.connection.duration"
	HistogramRTT                = "tcp.rtt"
	HistogramHandshakeDuration  = "system.network.tcp.handshake.duration"
)

// otelHistograms are the workload view's histograms.
var otelHistograms = []Histogram{
	{Name: HistogramConnectionDuration, Description: "otel profile: how long connections lived, observed at close.", Unit: "s",
		Bounds: aggregate.DurationBounds, Of: func(s *aggregate.Series) *aggregate.Histogram { return &s.Duration }},
	{Name: HistogramRTT, Description: "otel profile: smoothed round-trip time of connections (tcp_sock.srtt_us >> 3), observed at each report of a live connection and at close.", Unit: "s",
		Bounds: aggregate.RTTBounds, Of: func(s *aggregate.Series) *aggregate.Histogram { return &s.RTT }},
	{Name: HistogramHandshakeDuration, Description: "otel profile: how long handshakes took, observed at open: outbound (client), connect to established; inbound (server), the SYN-ACK's round trip (the closest the kernel keeps). The name is the OpenTelemetry proposal's (semantic-conventions#3682); its network.tcp.handshake.role is the direction here (outbound: client, inbound: server).", Unit: "s",
		Bounds: aggregate.HandshakeBounds, Of: func(s *aggregate.Series) *aggregate.Histogram { return &s.Handshake }},
}

func otel(opts Options) *Profile {
	p := &Profile{LocalResource: otelResource, LocalKey: otelLocalKey}
	if opts.Workload {
		p.RecordBacklog = otelBacklog
		var hs []Histogram
		for _, h := range otelHistograms {
			if opts.Histograms && (opts.HistogramEnabled == nil || opts.HistogramEnabled(h.Name)) {
				hs = append(hs, h)
			}
		}
		p.Views = append(p.Views, View{
			ViewSpec: aggregate.ViewSpec{Kind: aggregate.ViewWorkload, Project: otelWorkloadKey, Histograms: len(hs) > 0,
				PeerAddr: optedIn(opts.Metrics, "peer.address"), PeerPort: optedIn(opts.Metrics, "peer.port")},
			Record: otelWorkload, RecordOpen: otelOpen,
			Histograms:          hs,
			HistogramAttributes: otelHistogramAttributes,
		})
	}
	if opts.Service {
		p.Views = append(p.Views, View{
			ViewSpec: aggregate.ViewSpec{Kind: aggregate.ViewService, Project: otelServiceKey},
			Record:   otelService,
		})
	}
	if opts.Workload && (opts.Metrics == nil || opts.Metrics.Metrics.TCPBytesCrossZone.Enabled) {
		p.Views = append(p.Views, View{
			ViewSpec: aggregate.ViewSpec{Kind: aggregate.ViewCrossZone, Project: otelCrossZoneKey, Keep: CrossZone},
			Record:   otelCrossZone,
		})
	}
	return p
}

// CrossZone reports whether a connection's ends are on nodes in two
// different zones, both known.
func CrossZone(c *conntable.Conn) bool {
	return c.Local.Zone != "" && c.Peer.Zone != "" && c.Local.Zone != c.Peer.Zone
}

func otelCrossZoneKey(c *conntable.Conn, e bpf.ErrorType, k *aggregate.Key) {
	k.Error = e // failures: a series of their own, which reports nothing
	otelLocal(c.Local, k)
	l := &k.Labels
	l[czPeerWorkload], l[czPeerKind], l[czPeerNamespace], l[czPeerZone] = orU(c.Peer.Workload), orU(c.Peer.WorkloadKind), orU(c.Peer.Namespace), c.Peer.Zone
}

// otelCrossZone writes the bytes a cross-zone series carried, each way.
// Failures carry none.
func otelCrossZone(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *aggregate.Key, v *aggregate.Values) {
	if k.Error != bpf.ErrorNone {
		return
	}
	l := &k.Labels
	w, kind, ns, zone := l[czPeerWorkload], l[czPeerKind], l[czPeerNamespace], l[czPeerZone]
	mb.RecordTCPBytesCrossZoneDataPoint(ts, int64(v.Sent), metadata.AttributeNetworkIoDirectionTransmit, w, kind, ns, zone)
	mb.RecordTCPBytesCrossZoneDataPoint(ts, int64(v.Received), metadata.AttributeNetworkIoDirectionReceive, w, kind, ns, zone)
}

// otelBacklog records a local port's accept queue.
func otelBacklog(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, port uint16, queued, limit int64) {
	mb.RecordSystemNetworkTCPAcceptQueueSizeDataPoint(ts, queued, int64(port))
	mb.RecordSystemNetworkTCPAcceptQueueLimitDataPoint(ts, limit, int64(port))
}

func otelLocal(id *identity.Identity, k *aggregate.Key) {
	l := &k.Labels
	l[localWorkload], l[localKind], l[localNamespace] = id.Workload, id.WorkloadKind, id.Namespace
	l[localPod], l[localPodUID] = id.Pod, id.PodUID
	l[localCanonicalService], l[localCanonicalRevision] = id.CanonicalService, id.CanonicalRevision
	l[localZone] = id.Zone
}

func otelWorkloadKey(c *conntable.Conn, e bpf.ErrorType, k *aggregate.Key) {
	k.Direction, k.Error, k.IPv6 = c.Direction, e, c.IPv6
	otelLocal(c.Local, k)
	k.Labels[peerWorkload], k.Labels[peerKind], k.Labels[peerNamespace] = orU(c.Peer.Workload), orU(c.Peer.WorkloadKind), orU(c.Peer.Namespace)
}

func otelServiceKey(c *conntable.Conn, e bpf.ErrorType, k *aggregate.Key) {
	k.Direction, k.Error = c.Direction, e
	otelLocal(c.Local, k)
	srv := c.Server()
	k.Labels[svcName], k.Labels[svcNamespace] = orU(srv.ServiceName), orU(srv.ServiceNamespace)
}

func otelLocalKey(k *aggregate.Key) LocalEnd { return LocalEnd(k.Labels[:numLocal]) }

// otelResource puts the local end on the Resource.
func otelResource(rb *metadata.ResourceBuilder, k *aggregate.Key) {
	l := &k.Labels
	set := func(f func(string), v string) {
		if v != "" {
			f(v)
		}
	}
	set(rb.SetK8sPodName, l[localPod])
	set(rb.SetK8sPodUID, l[localPodUID])
	set(rb.SetK8sNamespaceName, l[localNamespace])
	set(rb.SetServiceName, l[localCanonicalService])
	if l[localCanonicalService] != "" {
		set(rb.SetServiceNamespace, l[localNamespace])
	}
	// job and instance in Prometheus: without an instance the pods of one
	// workload share every label and their counters overwrite each other.
	if l[localPod] != "" {
		rb.SetServiceInstanceID(l[localNamespace] + "." + l[localPod])
	}
	set(rb.SetServiceVersion, l[localCanonicalRevision])
	set(rb.SetCloudAvailabilityZone, l[localZone])
	workload := l[localWorkload]
	switch l[localKind] {
	case "Deployment":
		rb.SetK8sDeploymentName(workload)
	case "StatefulSet":
		rb.SetK8sStatefulsetName(workload)
	case "DaemonSet":
		rb.SetK8sDaemonsetName(workload)
	case "CronJob":
		rb.SetK8sCronjobName(workload)
	case "Job":
		rb.SetK8sJobName(workload)
	case "ReplicaSet":
		rb.SetK8sReplicasetName(workload)
	case "Node":
		// The node's own processes: job="node", instance=<node>, as a
		// node exporter's series are named.
		rb.SetServiceName("node")
		rb.SetServiceInstanceID(workload)
	}
}

// otelWorkload writes one series of the workload view; the local end is
// on the Resource.
func otelWorkload(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *aggregate.Key, v *aggregate.Values) {
	dir, nt, l, addr, port := direction(k.Direction), networkType(k.IPv6), &k.Labels, k.PeerAddr, int64(k.PeerPort)
	w, kind, ns := l[peerWorkload], l[peerKind], l[peerNamespace]
	if k.Error != bpf.ErrorNone {
		mb.RecordTCPConnectionsFailedDataPoint(ts, int64(v.Failed), dir, nt, w, kind, ns, ErrorType(k.Error), addr, port)
		return
	}
	mb.RecordTCPConnectionsOpenedDataPoint(ts, int64(v.Opened), dir, nt, w, kind, ns, addr, port)
	mb.RecordTCPConnectionsClosedDataPoint(ts, int64(v.Closed), dir, nt, w, kind, ns, addr, port)
	mb.RecordTCPBytesSentDataPoint(ts, int64(v.Sent), dir, nt, w, kind, ns, addr, port)
	mb.RecordTCPBytesReceivedDataPoint(ts, int64(v.Received), dir, nt, w, kind, ns, addr, port)
	mb.RecordTCPRetransmitsDataPoint(ts, int64(v.Retransmits), dir, nt, w, kind, ns, addr, port)
	mb.RecordTCPPacketsLostDataPoint(ts, int64(v.Lost), dir, nt, w, kind, ns, addr, port)
	// Only once a series has seen one: most never do.
	if v.ResetsReceived > 0 {
		mb.RecordSystemNetworkTCPResetsDataPoint(ts, int64(v.ResetsReceived), dir, nt, w, kind, ns, metadata.AttributeTCPCloseCauseResetReceived, addr, port)
	}
	if v.ResetsSent > 0 {
		mb.RecordSystemNetworkTCPResetsDataPoint(ts, int64(v.ResetsSent), dir, nt, w, kind, ns, metadata.AttributeTCPCloseCauseResetSent, addr, port)
	}
	if v.Refused > 0 {
		mb.RecordSystemNetworkTCPResetsDataPoint(ts, int64(v.Refused), dir, nt, w, kind, ns, metadata.AttributeTCPCloseCauseRefused, addr, port)
	}
	// Only the series of a namespace's listener counters has them.
	if v.ListenOverflows > 0 {
		mb.RecordSystemNetworkTCPAcceptQueueOverflowsDataPoint(ts, int64(v.ListenOverflows))
	}
	if v.ListenDrops > 0 {
		mb.RecordSystemNetworkTCPListenDropsDataPoint(ts, int64(v.ListenDrops))
	}
	for t, n := range v.RetransmitsByType {
		if n > 0 {
			mb.RecordSystemNetworkTCPRetransmitsDataPoint(ts, int64(n), dir, nt, w, kind, ns, RetransmitType(bpf.RetransmitType(t)), addr, port)
		}
	}
}

// RetransmitType is the network.tcp.retransmit.type of t.
func RetransmitType(t bpf.RetransmitType) metadata.AttributeNetworkTCPRetransmitType {
	switch t {
	case bpf.RetransmitSYN:
		return metadata.AttributeNetworkTCPRetransmitTypeSyn
	case bpf.RetransmitSYNACK:
		return metadata.AttributeNetworkTCPRetransmitTypeSynAck
	case bpf.RetransmitTimeout:
		return metadata.AttributeNetworkTCPRetransmitTypeTimeout
	case bpf.RetransmitFast:
		return metadata.AttributeNetworkTCPRetransmitTypeFast
	}
	return metadata.AttributeNetworkTCPRetransmitTypeTailLossProbe
}

func otelOpen(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *aggregate.Key, open int64) {
	if k.Error != bpf.ErrorNone {
		return
	}
	l := &k.Labels
	mb.RecordTCPConnectionsOpenDataPoint(ts, open, direction(k.Direction), networkType(k.IPv6),
		l[peerWorkload], l[peerKind], l[peerNamespace], k.PeerAddr, int64(k.PeerPort))
}

func otelHistogramAttributes(k *aggregate.Key, a pcommon.Map) {
	a.PutStr("direction", direction(k.Direction).String())
	a.PutStr("network.type", networkType(k.IPv6).String())
	a.PutStr("peer.workload", k.Labels[peerWorkload])
	a.PutStr("peer.workload.kind", k.Labels[peerKind])
	a.PutStr("peer.namespace", k.Labels[peerNamespace])
}

func otelService(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *aggregate.Key, v *aggregate.Values) {
	dir, name, ns := direction(k.Direction), k.Labels[svcName], k.Labels[svcNamespace]
	if k.Error != bpf.ErrorNone {
		mb.RecordTCPServiceConnectionsFailedDataPoint(ts, int64(v.Failed), dir, name, ns, ErrorType(k.Error))
		return
	}
	mb.RecordTCPServiceConnectionsOpenedDataPoint(ts, int64(v.Opened), dir, name, ns)
	mb.RecordTCPServiceConnectionsClosedDataPoint(ts, int64(v.Closed), dir, name, ns)
	mb.RecordTCPServiceBytesSentDataPoint(ts, int64(v.Sent), dir, name, ns)
	mb.RecordTCPServiceBytesReceivedDataPoint(ts, int64(v.Received), dir, name, ns)
}

// optedIn reports whether any otel workload metric enables the attribute.
func optedIn(mc *metadata.MetricsBuilderConfig, attr string) bool {
	if mc == nil {
		return false
	}
	m := &mc.Metrics
	return slices.Contains(keys(m.TCPConnectionsOpened.EnabledAttributes), attr) ||
		slices.Contains(keys(m.TCPConnectionsClosed.EnabledAttributes), attr) ||
		slices.Contains(keys(m.TCPConnectionsFailed.EnabledAttributes), attr) ||
		slices.Contains(keys(m.TCPConnectionsOpen.EnabledAttributes), attr) ||
		slices.Contains(keys(m.TCPBytesSent.EnabledAttributes), attr) ||
		slices.Contains(keys(m.TCPBytesReceived.EnabledAttributes), attr) ||
		slices.Contains(keys(m.TCPRetransmits.EnabledAttributes), attr) ||
		slices.Contains(keys(m.TCPPacketsLost.EnabledAttributes), attr) ||
		slices.Contains(keys(m.SystemNetworkTCPResets.EnabledAttributes), attr) ||
		slices.Contains(keys(m.SystemNetworkTCPRetransmits.EnabledAttributes), attr)
}

func keys[K ~string](in []K) []string {
	out := make([]string, len(in))
	for i, k := range in {
		out[i] = string(k)
	}
	return out
}
