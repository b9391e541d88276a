package receiver

import (
	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// meshRecord is the shape of every Istio- and Kmesh-style record function:
// reporter, the source block, three destination service or pod labels, the
// destination block, protocol, flags and security policy.
type meshRecord func(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, val int64, reporter metadata.AttributeReporter,
	sw, scs, scr, sns, sp, sa, sv, sc, m1, m2, m3, dw, dcs, dcr, dns, dp, da, dv, dc, proto, flags, policy string)

// meshFamily is one Istio-style metric family.
type meshFamily struct {
	opened, closed, failed, sent, received, retrans, lost meshRecord
	// pod: the middle labels are the destination pod (Kmesh workload
	// view), not the destination service.
	pod bool
}

var (
	istioFamily = meshFamily{
		opened:   (*metadata.MetricsBuilder).RecordIstioTCPConnectionsOpenedDataPoint,
		closed:   (*metadata.MetricsBuilder).RecordIstioTCPConnectionsClosedDataPoint,
		failed:   (*metadata.MetricsBuilder).RecordIstioTCPConnectionsFailedDataPoint,
		sent:     (*metadata.MetricsBuilder).RecordIstioTCPSentBytesDataPoint,
		received: (*metadata.MetricsBuilder).RecordIstioTCPReceivedBytesDataPoint,
	}
	kmeshServiceFamily = meshFamily{
		opened:   (*metadata.MetricsBuilder).RecordKmeshTCPConnectionsOpenedDataPoint,
		closed:   (*metadata.MetricsBuilder).RecordKmeshTCPConnectionsClosedDataPoint,
		failed:   (*metadata.MetricsBuilder).RecordKmeshTCPConnectionsFailedDataPoint,
		sent:     (*metadata.MetricsBuilder).RecordKmeshTCPSentBytesDataPoint,
		received: (*metadata.MetricsBuilder).RecordKmeshTCPReceivedBytesDataPoint,
	}
	kmeshWorkloadFamily = meshFamily{
		opened:   (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadConnectionsOpenedDataPoint,
		closed:   (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadConnectionsClosedDataPoint,
		failed:   (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadConnectionsFailedDataPoint,
		sent:     (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadSentBytesDataPoint,
		received: (*metadata.MetricsBuilder).RecordKmeshTCPWorkloadReceivedBytesDataPoint,
		retrans:  (*metadata.MetricsBuilder).RecordKmeshTCPRetransDataPoint,
		lost:     (*metadata.MetricsBuilder).RecordKmeshTCPPacketLossDataPoint,
		pod:      true,
	}
)

// recordMesh writes one series in an Istio-style family. The source is the
// client and the destination the server; the reporter is whichever is
// local. Like ztunnel, sent bytes are the server's and received bytes the
// client's whatever the reporter (istio/istio#32399).
func (f *meshFamily) record(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *seriesKey, d values) {
	reporter := metadata.AttributeReporterSource
	src, dst := &k.local, &k.peer
	serverSent, clientSent := d.received, d.sent
	if k.direction == metadata.AttributeDirectionInbound {
		reporter = metadata.AttributeReporterDestination
		src, dst = &k.peer, &k.local
		serverSent, clientSent = d.sent, d.received
	}
	m1, m2, m3 := k.svcHost, k.svcNamespace, k.svcName
	if f.pod {
		m1, m2, m3 = dst.podAddress, dst.namespace, dst.pod
	}
	flags := "-"
	if k.errorType != 0 {
		flags = "UF"
	}
	rec := func(r meshRecord, v int64) {
		if r == nil {
			return
		}
		r(mb, ts, v, reporter,
			src.workload, src.canonicalService, src.canonicalRevision, src.namespace, src.principal, src.app, src.version, src.cluster,
			m1, m2, m3,
			dst.workload, dst.canonicalService, dst.canonicalRevision, dst.namespace, dst.principal, dst.app, dst.version, dst.cluster,
			"tcp", flags, "unknown")
	}
	if k.errorType != 0 {
		rec(f.failed, d.failed)
		return
	}
	rec(f.opened, d.opened)
	rec(f.closed, d.closed)
	rec(f.sent, serverSent)
	rec(f.received, clientSent)
	rec(f.retrans, d.retrans)
	rec(f.lost, d.lost)
}

// recordOTelWorkload writes one series of the otel workload view; the
// local end is on the Resource, written by the caller.
func recordOTelWorkload(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *seriesKey, d values) {
	p := &k.peer
	if k.errorType != 0 {
		mb.RecordTCPConnectionsFailedDataPoint(ts, d.failed, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.errorType, k.peerAddress, int64(k.peerPort))
		return
	}
	mb.RecordTCPConnectionsOpenedDataPoint(ts, d.opened, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.peerAddress, int64(k.peerPort))
	mb.RecordTCPConnectionsClosedDataPoint(ts, d.closed, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.peerAddress, int64(k.peerPort))
	mb.RecordTCPBytesSentDataPoint(ts, d.sent, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.peerAddress, int64(k.peerPort))
	mb.RecordTCPBytesReceivedDataPoint(ts, d.received, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.peerAddress, int64(k.peerPort))
	mb.RecordTCPRetransmitsDataPoint(ts, d.retrans, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.peerAddress, int64(k.peerPort))
	mb.RecordTCPPacketsLostDataPoint(ts, d.lost, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.peerAddress, int64(k.peerPort))
}

// recordOTelOpen writes the open-connections count, always cumulative.
func recordOTelOpen(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *seriesKey, cur values) {
	if k.errorType != 0 {
		return
	}
	p := &k.peer
	mb.RecordTCPConnectionsOpenDataPoint(ts, cur.open, k.direction, k.networkType, p.workload, p.kind, p.namespace, k.peerAddress, int64(k.peerPort))
}

func recordOTelService(mb *metadata.MetricsBuilder, ts pcommon.Timestamp, k *seriesKey, d values) {
	if k.errorType != 0 {
		mb.RecordTCPServiceConnectionsFailedDataPoint(ts, d.failed, k.direction, k.svcName, k.svcNamespace, k.errorType)
		return
	}
	mb.RecordTCPServiceConnectionsOpenedDataPoint(ts, d.opened, k.direction, k.svcName, k.svcNamespace)
	mb.RecordTCPServiceConnectionsClosedDataPoint(ts, d.closed, k.direction, k.svcName, k.svcNamespace)
	mb.RecordTCPServiceBytesSentDataPoint(ts, d.sent, k.direction, k.svcName, k.svcNamespace)
	mb.RecordTCPServiceBytesReceivedDataPoint(ts, d.received, k.direction, k.svcName, k.svcNamespace)
}

// setLocalResource puts the local end on the otel Resource.
func setLocalResource(rb *metadata.ResourceBuilder, l *endLabels) {
	set := func(f func(string), v string) {
		if v != "" {
			f(v)
		}
	}
	set(rb.SetK8sPodName, l.pod)
	set(rb.SetK8sPodUID, l.podUID)
	set(rb.SetK8sNamespaceName, l.namespace)
	set(rb.SetServiceName, l.canonicalService)
	set(rb.SetServiceVersion, l.canonicalRevision)
	switch l.kind {
	case "Deployment":
		rb.SetK8sDeploymentName(l.workload)
	case "StatefulSet":
		rb.SetK8sStatefulsetName(l.workload)
	case "DaemonSet":
		rb.SetK8sDaemonsetName(l.workload)
	case "CronJob":
		rb.SetK8sCronjobName(l.workload)
	case "Job":
		rb.SetK8sJobName(l.workload)
	case "ReplicaSet":
		rb.SetK8sReplicasetName(l.workload)
	}
}
