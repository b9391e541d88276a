package accesslog

import (
	"net/netip"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

// Access-log attribute names. Semantic-convention names where one exists.
const (
	AttrNetworkTransport = "network.transport"
	AttrNetworkType      = "network.type"
	AttrSourceAddress    = "source.address"
	AttrSourcePort       = "source.port"
	AttrDestAddress      = "destination.address"
	AttrDestPort         = "destination.port"
	AttrPeerAddress      = "network.peer.address"
	AttrPeerPort         = "network.peer.port"
	AttrDirection        = "tcpconn.direction"
	AttrConnID           = "tcpconn.connection.id"
	AttrState            = "tcp.state"
	AttrPrevState        = "tcp.state.previous"
	AttrBytesSent        = "tcp.bytes.sent"
	AttrBytesReceived    = "tcp.bytes.received"
	AttrRetransmits      = "tcp.retransmits"
	AttrLost             = "tcp.packets.lost"
	// AttrRetransmitsPrefix + a network.tcp.retransmit.type value
	// (bpf.RetransmitType.String) names the retransmits of that type.
	AttrRetransmitsPrefix = "tcp.retransmits."
	AttrSRTT              = "tcp.rtt.smoothed_us"
	AttrRTTMin            = "tcp.rtt.min_us"
	AttrDuration          = "tcp.connection.duration"
	AttrStartTime         = "tcp.connection.start_time"
	AttrAdopted           = "tcpconn.adopted"
	AttrErrorType         = "error.type"
	AttrErrno             = "tcp.errno"
	AttrCloseCause        = "tcp.close.cause"
	AttrHandshake         = "tcp.handshake.duration"
	AttrConnUID           = "tcp.connection.uid"
	AttrPID               = "process.pid"
	AttrExecutable        = "process.executable.name"
	AttrNetNS             = "tcpconn.netns"
	AttrDialledAddress    = "tcpconn.dialled.address"
	AttrDialledPort       = "tcpconn.dialled.port"
	AttrIntervalSent      = "tcpconn.interval.bytes.sent"
	AttrIntervalReceived  = "tcpconn.interval.bytes.received"
	AttrIntervalRetrans   = "tcpconn.interval.retransmits"
	AttrIntervalLost      = "tcpconn.interval.packets.lost"
	eventNamePrefix       = "tcp.connection."
	severityTextInfo      = "INFO"
	severityTextWarn      = "WARN"
	durationMillisDecimal = 3
)

// retransmitAttrs names the per-type retransmit attributes, by
// bpf.RetransmitType: tcp.retransmits.syn, ... (built once: no string
// concatenation per record).
var retransmitAttrs = func() (a [bpf.RetransmitTypes]string) {
	for t := range a {
		a[t] = AttrRetransmitsPrefix + bpf.RetransmitType(t).String()
	}
	return a
}()

// ends orders a record's two ends as client (source) and server
// (destination), whichever of them is on this node.
type ends struct {
	srcAddr, dstAddr netip.Addr
	srcPort, dstPort uint16
	src, dst         *identity.Identity
}

func endsOf(rec *bpf.Record, local, peer *identity.Identity) ends {
	if rec.Direction == bpf.DirectionInbound {
		return ends{rec.PeerAddr, rec.LocalAddr, rec.PeerPort, rec.LocalPort, peer, local}
	}
	return ends{rec.LocalAddr, rec.PeerAddr, rec.LocalPort, rec.PeerPort, local, peer}
}

// Converter turns records into access-log records. It reuses one byte
// buffer for the body line; it is owned by the reader goroutine.
type Converter struct {
	buf []byte
}

// Fill writes rec into lr: the one-line body in the Kmesh / ztunnel field
// order and the same values as typed attributes.
func (c *Converter) Fill(lr plog.LogRecord, rec *bpf.Record, o *conntable.Observation, observed time.Time) {
	e := endsOf(rec, o.Local, o.Peer)
	warn := isFailure(rec)

	lr.SetTimestamp(pcommon.NewTimestampFromTime(rec.Time))
	lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(observed))
	lr.SetEventName(eventNamePrefix + rec.Kind.String())
	if warn {
		lr.SetSeverityNumber(plog.SeverityNumberWarn)
		lr.SetSeverityText(severityTextWarn)
	} else {
		lr.SetSeverityNumber(plog.SeverityNumberInfo)
		lr.SetSeverityText(severityTextInfo)
	}
	lr.Body().SetStr(c.body(rec, e, o, warn))

	a := lr.Attributes()
	a.EnsureCapacity(32)
	a.PutStr(AttrNetworkTransport, "tcp")
	a.PutStr(AttrNetworkType, networkType(rec))
	a.PutStr(AttrSourceAddress, e.srcAddr.String())
	a.PutInt(AttrSourcePort, int64(e.srcPort))
	a.PutStr(AttrDestAddress, e.dstAddr.String())
	a.PutInt(AttrDestPort, int64(e.dstPort))
	a.PutStr(AttrPeerAddress, rec.PeerAddr.String())
	a.PutInt(AttrPeerPort, int64(rec.PeerPort))
	if o.Dialled.IsValid() {
		a.PutStr(AttrDialledAddress, o.Dialled.Addr().String())
		a.PutInt(AttrDialledPort, int64(o.Dialled.Port()))
	}
	a.PutStr(AttrDirection, rec.Direction.String())
	a.PutInt(AttrConnID, int64(rec.ConnID))
	if uid, ok := rec.UID(); ok {
		var b [16]byte
		a.PutStr(AttrConnUID, string(bpf.UIDString(&b, uid)))
	}
	a.PutInt(AttrNetNS, int64(rec.NetNS))
	a.PutStr(AttrState, rec.NewState.String())
	a.PutStr(AttrPrevState, rec.OldState.String())
	a.PutInt(AttrBytesSent, int64(rec.BytesSent))
	a.PutInt(AttrBytesReceived, int64(rec.BytesReceived))
	a.PutInt(AttrRetransmits, int64(rec.Retransmits))
	for t, n := range rec.RetransmitsByType {
		if n > 0 {
			a.PutInt(retransmitAttrs[t], int64(n))
		}
	}
	a.PutInt(AttrLost, int64(rec.Lost))
	if rec.Kind == bpf.KindUpdate {
		a.PutInt(AttrIntervalSent, int64(o.Delta.Sent))
		a.PutInt(AttrIntervalReceived, int64(o.Delta.Received))
		a.PutInt(AttrIntervalRetrans, int64(o.Delta.Retransmits))
		a.PutInt(AttrIntervalLost, int64(o.Delta.Lost))
	}
	a.PutInt(AttrSRTT, rec.SRTT.Microseconds())
	a.PutInt(AttrRTTMin, rec.RTTMin.Microseconds())
	if rec.Flags&bpf.FlagAdopted != 0 {
		a.PutBool(AttrAdopted, true)
	} else {
		a.PutDouble(AttrDuration, rec.Duration().Seconds())
		a.PutStr(AttrStartTime, rec.Start.UTC().Format(time.RFC3339Nano))
	}
	if rec.Handshake > 0 && rec.Kind != bpf.KindUpdate {
		a.PutDouble(AttrHandshake, rec.Handshake.Seconds())
	}
	if cause := rec.CloseCause(); cause != bpf.CauseNone {
		a.PutStr(AttrCloseCause, cause.String())
	}
	if warn {
		a.PutStr(AttrErrorType, errorName(rec))
		a.PutInt(AttrErrno, int64(rec.Errno))
	}
	if rec.PID != 0 {
		a.PutInt(AttrPID, int64(rec.PID))
		a.PutStr(AttrExecutable, rec.CommString())
	}
	putEnd(a, &sourceKeys, e.src)
	putEnd(a, &destinationKeys, e.dst)
}

// endKeys are the attribute names of one end's identity.
type endKeys struct {
	pod, podUID, namespace, node, zone, workload, workloadKind, serviceAccount, principal,
	app, version, canonicalService, canonicalRevision, cluster, serviceHost, serviceName, serviceNamespace string
}

func keysFor(prefix string) endKeys {
	return endKeys{
		pod: prefix + ".k8s.pod.name", podUID: prefix + ".k8s.pod.uid", namespace: prefix + ".k8s.namespace.name",
		node: prefix + ".k8s.node.name", zone: prefix + ".cloud.availability_zone", workload: prefix + ".workload.name", workloadKind: prefix + ".workload.kind",
		serviceAccount: prefix + ".service_account", principal: prefix + ".principal", app: prefix + ".app",
		version: prefix + ".version", canonicalService: prefix + ".canonical_service",
		canonicalRevision: prefix + ".canonical_revision", cluster: prefix + ".cluster",
		serviceHost: prefix + ".service.host", serviceName: prefix + ".service.name", serviceNamespace: prefix + ".service.namespace",
	}
}

var sourceKeys, destinationKeys = keysFor("source"), keysFor("destination")

// putEnd writes the known identity fields of one end; unknown ones are
// left out rather than written empty.
func putEnd(a pcommon.Map, k *endKeys, id *identity.Identity) {
	for _, kv := range [...]struct{ key, val string }{
		{k.pod, id.Pod}, {k.podUID, id.PodUID}, {k.namespace, id.Namespace}, {k.node, id.Node}, {k.zone, id.Zone},
		{k.workload, id.Workload}, {k.workloadKind, id.WorkloadKind}, {k.serviceAccount, id.ServiceAccount},
		{k.principal, id.Principal}, {k.app, id.App}, {k.version, id.Version},
		{k.canonicalService, id.CanonicalService}, {k.canonicalRevision, id.CanonicalRevision}, {k.cluster, id.Cluster},
		{k.serviceHost, id.Service}, {k.serviceName, id.ServiceName}, {k.serviceNamespace, id.ServiceNamespace},
	} {
		if kv.val != "" {
			a.PutStr(kv.key, kv.val)
		}
	}
}

func errorName(rec *bpf.Record) string { return rec.Error().String() }

// body renders the access-log line, in the Kmesh / ztunnel field order:
// src.addr=IP:PORT src.workload=W src.namespace=N dst.addr=IP:PORT
// [dst.dialled=IP:PORT] dst.service=S dst.workload=W dst.namespace=N direction=D state=S
// sent_bytes=N received_bytes=N duration=Xms
// [interval_sent_bytes=N interval_received_bytes=N] [error=E]
func (c *Converter) body(rec *bpf.Record, e ends, o *conntable.Observation, withError bool) string {
	b := c.buf[:0]
	b = append(b, "src.addr="...)
	b = netip.AddrPortFrom(e.srcAddr, e.srcPort).AppendTo(b)
	b = append(b, " src.workload="...)
	b = append(b, identity.OrDash(e.src.Workload)...)
	b = append(b, " src.namespace="...)
	b = append(b, identity.OrDash(e.src.Namespace)...)
	b = append(b, " dst.addr="...)
	b = netip.AddrPortFrom(e.dstAddr, e.dstPort).AppendTo(b)
	if o.Dialled.IsValid() {
		b = append(b, " dst.dialled="...)
		b = o.Dialled.AppendTo(b)
	}
	b = append(b, " dst.service="...)
	b = append(b, identity.OrDash(e.dst.Service)...)
	b = append(b, " dst.workload="...)
	b = append(b, identity.OrDash(e.dst.Workload)...)
	b = append(b, " dst.namespace="...)
	b = append(b, identity.OrDash(e.dst.Namespace)...)
	b = append(b, " direction="...)
	b = append(b, rec.Direction.String()...)
	b = append(b, " state="...)
	b = append(b, rec.NewState.String()...)
	b = append(b, " sent_bytes="...)
	b = strconv.AppendUint(b, rec.BytesSent, 10)
	b = append(b, " received_bytes="...)
	b = strconv.AppendUint(b, rec.BytesReceived, 10)
	b = append(b, " duration="...)
	if rec.Flags&bpf.FlagAdopted != 0 {
		b = append(b, '-')
	} else {
		b = strconv.AppendFloat(b, float64(rec.Duration())/float64(time.Millisecond), 'f', durationMillisDecimal, 64)
		b = append(b, "ms"...)
	}
	if rec.Kind == bpf.KindUpdate {
		b = append(b, " interval_sent_bytes="...)
		b = strconv.AppendUint(b, o.Delta.Sent, 10)
		b = append(b, " interval_received_bytes="...)
		b = strconv.AppendUint(b, o.Delta.Received, 10)
	}
	if withError {
		b = append(b, " error="...)
		b = append(b, errorName(rec)...)
	}
	c.buf = b
	return string(b)
}

func networkType(rec *bpf.Record) string {
	if rec.LocalAddr.Is6() && !rec.LocalAddr.Is4In6() {
		return "ipv6"
	}
	return "ipv4"
}
