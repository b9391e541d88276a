package accesslog

import (
	"net/netip"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/xpdata"

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

// eventNames is tcp.connection.<kind> by bpf.Kind (built once: no string
// concatenation per record).
var eventNames = func() (n [256]string) {
	for k := range n {
		n[k] = eventNamePrefix + bpf.Kind(k).String()
	}
	return n
}()

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

// Converter turns records into access-log records. It is owned by the
// reader goroutine and reuses its buffers from record to record, so that
// what a record costs is what pdata keeps of it. The zero Converter writes
// bodies.
type Converter struct {
	// noBody leaves the body empty (Config.Body BodyNone).
	noBody bool
	// text holds every string built for one record (the body line,
	// addresses, the UID, the start time, the command): they become one
	// string, one allocation, which the body and attributes share by
	// slicing (so any of them kept downstream keeps the few hundred bytes
	// of the whole).
	text []byte
	// attrs is the record's attributes in order, gathered before any goes
	// to pdata so that its map is allocated once at its exact size.
	attrs []attr
	// mb builds the attribute map without Map.Put's search for an
	// existing key, which made adding n attributes cost n²/2 comparisons;
	// attrs holds each key once.
	mb xpdata.MapBuilder
}

// NewConverter returns a converter that writes records as cfg says.
func NewConverter(cfg Config) *Converter { return &Converter{noBody: cfg.Body == BodyNone} }

// attrKind says which field of an attr holds its value.
type attrKind uint8

const (
	attrStr    attrKind = iota // str
	attrText                   // text[lo:hi] of the record's text
	attrInt                    // num
	attrDouble                 // dbl
	attrBool                   // num != 0
)

// attr is one attribute waiting for the record's text to become a string.
type attr struct {
	key    string
	str    string
	num    int64
	dbl    float64
	lo, hi int
	kind   attrKind
}

// span is where a string sits in the record's text.
type span struct{ lo, hi int }

func (c *Converter) addStr(key, val string) {
	c.attrs = append(c.attrs, attr{key: key, str: val, kind: attrStr})
}

func (c *Converter) addInt(key string, val int64) {
	c.attrs = append(c.attrs, attr{key: key, num: val, kind: attrInt})
}

func (c *Converter) addDouble(key string, val float64) {
	c.attrs = append(c.attrs, attr{key: key, dbl: val, kind: attrDouble})
}

func (c *Converter) addBool(key string, val bool) {
	var n int64
	if val {
		n = 1
	}
	c.attrs = append(c.attrs, attr{key: key, num: n, kind: attrBool})
}

func (c *Converter) addText(key string, s span) {
	c.attrs = append(c.attrs, attr{key: key, lo: s.lo, hi: s.hi, kind: attrText})
}

// appendAddr appends a's text to the record's text and returns where it is.
func (c *Converter) appendAddr(a netip.Addr) span {
	lo := len(c.text)
	if a.IsValid() {
		c.text = a.AppendTo(c.text)
	} else {
		c.text = append(c.text, a.String()...) // "invalid IP", as String had it
	}
	return span{lo, len(c.text)}
}

// Fill writes rec into lr, a new record: the one-line body in the Kmesh /
// ztunnel field order (unless the body is off) and the same values as
// typed attributes. lr's attributes are replaced, not merged.
func (c *Converter) Fill(lr plog.LogRecord, rec *bpf.Record, o *conntable.Observation, observed time.Time) {
	e := endsOf(rec, o.Local, o.Peer)
	warn := isFailure(rec)

	lr.SetTimestamp(pcommon.NewTimestampFromTime(rec.Time))
	lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(observed))
	lr.SetEventName(eventNames[rec.Kind])
	if warn {
		lr.SetSeverityNumber(plog.SeverityNumberWarn)
		lr.SetSeverityText(severityTextWarn)
	} else {
		lr.SetSeverityNumber(plog.SeverityNumberInfo)
		lr.SetSeverityText(severityTextInfo)
	}

	c.text, c.attrs = c.text[:0], c.attrs[:0]
	if !c.noBody {
		c.body(rec, e, o, warn)
	}
	body := len(c.text)
	c.attributes(rec, e, o, warn)

	text := string(c.text)
	if !c.noBody {
		lr.Body().SetStr(text[:body])
	}
	c.mb.EnsureCapacity(len(c.attrs))
	for i := range c.attrs {
		a := &c.attrs[i]
		v := c.mb.AppendEmpty(a.key)
		switch a.kind {
		case attrStr:
			v.SetStr(a.str)
		case attrText:
			v.SetStr(text[a.lo:a.hi])
		case attrInt:
			v.SetInt(a.num)
		case attrDouble:
			v.SetDouble(a.dbl)
		case attrBool:
			v.SetBool(a.num != 0)
		}
	}
	c.mb.UnsafeIntoMap(lr.Attributes())
}

// attributes gathers rec's attributes in their documented order; the
// strings made for this record go into the record's text.
func (c *Converter) attributes(rec *bpf.Record, e ends, o *conntable.Observation, warn bool) {
	c.addStr(AttrNetworkTransport, "tcp")
	c.addStr(AttrNetworkType, networkType(rec))
	src := c.appendAddr(e.srcAddr)
	c.addText(AttrSourceAddress, src)
	c.addInt(AttrSourcePort, int64(e.srcPort))
	dst := c.appendAddr(e.dstAddr)
	c.addText(AttrDestAddress, dst)
	c.addInt(AttrDestPort, int64(e.dstPort))
	// The peer is one of the two ends: its address is already written.
	peer := dst
	if rec.PeerAddr == e.srcAddr {
		peer = src
	}
	c.addText(AttrPeerAddress, peer)
	c.addInt(AttrPeerPort, int64(rec.PeerPort))
	if o.Dialled.IsValid() {
		c.addText(AttrDialledAddress, c.appendAddr(o.Dialled.Addr()))
		c.addInt(AttrDialledPort, int64(o.Dialled.Port()))
	}
	c.addStr(AttrDirection, rec.Direction.String())
	c.addInt(AttrConnID, int64(rec.ConnID))
	if uid, ok := rec.UID(); ok {
		var b [16]byte
		lo := len(c.text)
		c.text = append(c.text, bpf.UIDString(&b, uid)...)
		c.addText(AttrConnUID, span{lo, len(c.text)})
	}
	c.addInt(AttrNetNS, int64(rec.NetNS))
	c.addStr(AttrState, rec.NewState.String())
	c.addStr(AttrPrevState, rec.OldState.String())
	c.addInt(AttrBytesSent, int64(rec.BytesSent))
	c.addInt(AttrBytesReceived, int64(rec.BytesReceived))
	c.addInt(AttrRetransmits, int64(rec.Retransmits))
	for t, n := range rec.RetransmitsByType {
		if n > 0 {
			c.addInt(retransmitAttrs[t], int64(n))
		}
	}
	c.addInt(AttrLost, int64(rec.Lost))
	if rec.Kind == bpf.KindUpdate {
		c.addInt(AttrIntervalSent, int64(o.Delta.Sent))
		c.addInt(AttrIntervalReceived, int64(o.Delta.Received))
		c.addInt(AttrIntervalRetrans, int64(o.Delta.Retransmits))
		c.addInt(AttrIntervalLost, int64(o.Delta.Lost))
	}
	c.addInt(AttrSRTT, rec.SRTT.Microseconds())
	c.addInt(AttrRTTMin, rec.RTTMin.Microseconds())
	if rec.Flags&bpf.FlagAdopted != 0 {
		c.addBool(AttrAdopted, true)
	} else {
		c.addDouble(AttrDuration, rec.Duration().Seconds())
		lo := len(c.text)
		c.text = rec.Start.UTC().AppendFormat(c.text, time.RFC3339Nano)
		c.addText(AttrStartTime, span{lo, len(c.text)})
	}
	if rec.Handshake > 0 && rec.Kind != bpf.KindUpdate {
		c.addDouble(AttrHandshake, rec.Handshake.Seconds())
	}
	if cause := rec.CloseCause(); cause != bpf.CauseNone {
		c.addStr(AttrCloseCause, cause.String())
	}
	if warn {
		c.addStr(AttrErrorType, errorName(rec))
		c.addInt(AttrErrno, int64(rec.Errno))
	}
	if rec.PID != 0 {
		c.addInt(AttrPID, int64(rec.PID))
		lo := len(c.text)
		c.text = append(c.text, rec.Command()...)
		c.addText(AttrExecutable, span{lo, len(c.text)})
	}
	c.end(&sourceKeys, e.src)
	c.end(&destinationKeys, e.dst)
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

// end gathers the known identity fields of one end; unknown ones are left
// out rather than written empty. The values are the resolver's own
// strings, shared by every record of the pod: nothing is built here.
func (c *Converter) end(k *endKeys, id *identity.Identity) {
	for _, kv := range [...]struct{ key, val string }{
		{k.pod, id.Pod}, {k.podUID, id.PodUID}, {k.namespace, id.Namespace}, {k.node, id.Node}, {k.zone, id.Zone},
		{k.workload, id.Workload}, {k.workloadKind, id.WorkloadKind}, {k.serviceAccount, id.ServiceAccount},
		{k.principal, id.Principal}, {k.app, id.App}, {k.version, id.Version},
		{k.canonicalService, id.CanonicalService}, {k.canonicalRevision, id.CanonicalRevision}, {k.cluster, id.Cluster},
		{k.serviceHost, id.Service}, {k.serviceName, id.ServiceName}, {k.serviceNamespace, id.ServiceNamespace},
	} {
		if kv.val != "" {
			c.addStr(kv.key, kv.val)
		}
	}
}

func errorName(rec *bpf.Record) string { return rec.Error().String() }

// body renders the access-log line, in the Kmesh / ztunnel field order:
// src.addr=IP:PORT src.workload=W src.namespace=N dst.addr=IP:PORT
// [dst.dialled=IP:PORT] dst.service=S dst.workload=W dst.namespace=N direction=D state=S
// sent_bytes=N received_bytes=N duration=Xms
// [interval_sent_bytes=N interval_received_bytes=N] [error=E]
func (c *Converter) body(rec *bpf.Record, e ends, o *conntable.Observation, withError bool) {
	b := c.text
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
	c.text = b
}

func networkType(rec *bpf.Record) string {
	if rec.LocalAddr.Is6() && !rec.LocalAddr.Is4In6() {
		return "ipv6"
	}
	return "ipv4"
}
