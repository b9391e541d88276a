package profile

import (
	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// Slots of the istio and kmesh keys, in the order of Istio's labels: the
// source (client) block, three labels between (the destination service,
// or Kmesh's destination pod), the destination (server) block. A missing
// value is "unknown", never empty: Kiali drops rows without a label.
const (
	srcBlock = 0
	middle   = srcBlock + blockLen
	dstBlock = middle + 3
	numMesh  = dstBlock + blockLen
)

// Offsets within an end's block.
const (
	blockWorkload = iota
	blockCanonicalService
	blockCanonicalRevision
	blockNamespace
	blockPrincipal
	blockApp
	blockVersion
	blockCluster
	blockLen
)

var _ [aggregate.NumLabels - numMesh]struct{} // the key holds every slot

func meshEnd(id *identity.Identity, l *[aggregate.NumLabels]string, at int) {
	l[at+blockWorkload], l[at+blockCanonicalService], l[at+blockCanonicalRevision] = orU(id.Workload), orU(id.CanonicalService), orU(id.CanonicalRevision)
	l[at+blockNamespace], l[at+blockPrincipal] = orU(id.Namespace), orU(id.Principal)
	l[at+blockApp], l[at+blockVersion], l[at+blockCluster] = orU(id.App), orU(id.Version), orU(id.Cluster)
}

// istioKey is Istio's (and Kmesh's service view's) label set: both ends'
// blocks and the destination service.
func istioKey(c *conntable.Conn, e bpf.ErrorType, k *aggregate.Key) {
	k.Direction, k.Error = c.Direction, e
	srv := c.Server()
	meshEnd(c.Client(), &k.Labels, srcBlock)
	meshEnd(srv, &k.Labels, dstBlock)
	k.Labels[middle], k.Labels[middle+1], k.Labels[middle+2] = orU(srv.Service), orU(srv.ServiceNamespace), orU(srv.ServiceName)
}

// kmeshWorkloadKey is Kmesh's workload label set: both ends' blocks and
// the destination pod, no service.
func kmeshWorkloadKey(c *conntable.Conn, e bpf.ErrorType, k *aggregate.Key) {
	k.Direction, k.Error = c.Direction, e
	srv := c.Server()
	meshEnd(c.Client(), &k.Labels, srcBlock)
	meshEnd(srv, &k.Labels, dstBlock)
	k.Labels[middle], k.Labels[middle+1], k.Labels[middle+2] = orU(srv.PodIP), orU(srv.Namespace), orU(srv.Pod)
}

// meshRecord is the generated signature of every Istio- and Kmesh-style
// metric: reporter, the source block, the three middle labels, the
// destination block, protocol, flags and security policy.
type meshRecord func(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, val int64, reporter metadata.AttributeReporter,
	sw, scs, scr, sns, sp, sa, sv, sc, m1, m2, m3, dw, dcs, dcr, dns, dp, da, dv, dc, proto, flags, policy string)

// meshFamily is one Istio-style metric family.
type meshFamily struct {
	opened, closed, failed, sent, received, retrans, lost meshRecord
}

func istio() *Profile {
	// Istio's one metric family carries workloads and services alike.
	return &Profile{Views: []View{meshView(aggregate.ViewService, istioKey, meshFamily{
		opened:   (*metadata.MetricsBuilder).RecordIstioTCPConnectionsOpenedDataPoint,
		closed:   (*metadata.MetricsBuilder).RecordIstioTCPConnectionsClosedDataPoint,
		failed:   (*metadata.MetricsBuilder).RecordIstioTCPConnectionsFailedDataPoint,
		sent:     (*metadata.MetricsBuilder).RecordIstioTCPSentBytesDataPoint,
		received: (*metadata.MetricsBuilder).RecordIstioTCPReceivedBytesDataPoint,
	})}}
}

func kmesh(opts Options) *Profile {
	p := &Profile{}
	if opts.Workload {
		p.Views = append(p.Views, meshView(aggregate.ViewWorkload, kmeshWorkloadKey, meshFamily{
			opened:   (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadConnectionsOpenedDataPoint,
			closed:   (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadConnectionsClosedDataPoint,
			failed:   (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadConnectionsFailedDataPoint,
			sent:     (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadSentBytesDataPoint,
			received: (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadReceivedBytesDataPoint,
			retrans:  (*metadata.MetricsBuilder).RecordKmeshTCPRetransDataPoint,
			lost:     (*metadata.MetricsBuilder).RecordKmeshTCPPacketLossDataPoint,
		}))
	}
	if opts.Service {
		p.Views = append(p.Views, meshView(aggregate.ViewService, istioKey, meshFamily{
			opened:   (*metadata.MetricsBuilder).RecordKmeshTCPConnectionsOpenedDataPoint,
			closed:   (*metadata.MetricsBuilder).RecordKmeshTCPConnectionsClosedDataPoint,
			failed:   (*metadata.MetricsBuilder).RecordKmeshTCPConnectionsFailedDataPoint,
			sent:     (*metadata.MetricsBuilder).RecordKmeshTCPSentBytesDataPoint,
			received: (*metadata.MetricsBuilder).RecordKmeshTCPReceivedBytesDataPoint,
		}))
	}
	return p
}

func meshView(kind aggregate.ViewKind, project aggregate.Project, f meshFamily) View {
	return View{ViewSpec: aggregate.ViewSpec{Kind: kind, Project: project}, Record: f.record}
}

// record writes one series in an Istio-style family. The source is the
// client and the destination the server; the reporter is whichever is
// local. Like ztunnel, sent bytes are the server's and received bytes the
// client's whatever the reporter (istio/istio#32399).
func (f meshFamily) record(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *aggregate.Key, v *aggregate.Values) {
	reporter := metadata.AttributeReporterSource
	serverSent, clientSent := v.Received, v.Sent
	if k.Direction == bpf.DirectionInbound {
		reporter = metadata.AttributeReporterDestination
		serverSent, clientSent = v.Sent, v.Received
	}
	flags := "-"
	if k.Error != bpf.ErrorNone {
		flags = "UF"
	}
	l := &k.Labels
	rec := func(r meshRecord, val uint64) {
		if r == nil {
			return
		}
		s, d := l[srcBlock:middle], l[dstBlock:numMesh]
		r(mb, ts, int64(val), reporter,
			s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
			l[middle], l[middle+1], l[middle+2],
			d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7],
			"tcp", flags, "unknown")
	}
	if k.Error != bpf.ErrorNone {
		rec(f.failed, v.Failed)
		return
	}
	rec(f.opened, v.Opened)
	rec(f.closed, v.Closed)
	rec(f.sent, serverSent)
	rec(f.received, clientSent)
	rec(f.retrans, v.Retransmits)
	rec(f.lost, v.Lost)
}
