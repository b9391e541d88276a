package receiver

import (
	"sync"
	"syscall"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// seriesKey is the attribute set of one connection series. Addresses and
// ports are deliberately absent: they would make cardinality unbounded.
// Strings come from the resolver's shared values, so building a key does
// not allocate.
type seriesKey struct {
	direction      metadata.AttributeDirection
	networkType    metadata.AttributeNetworkType
	localWorkload  string
	localNamespace string
	peerWorkload   string
	peerNamespace  string
}

type seriesValue struct {
	opened, closed, open, sent, received, retrans, lost int64
}

type failureKey struct {
	seriesKey
	errorType metadata.AttributeErrorType
}

// aggregator keeps cumulative counters per series between flushes. The
// reader adds to it and the flusher reads it; one mutex is enough at the
// rates one node produces (see BenchmarkAggregate).
type aggregator struct {
	mu       sync.Mutex
	series   map[seriesKey]*seriesValue
	failures map[failureKey]int64
}

func newAggregator() *aggregator {
	return &aggregator{series: map[seriesKey]*seriesValue{}, failures: map[failureKey]int64{}}
}

func keyOf(rec *bpf.Record, local, peer *identity.Identity) seriesKey {
	return seriesKey{
		direction:      directionAttr(rec.Direction),
		networkType:    networkTypeAttr(rec),
		localWorkload:  identity.OrUnknown(local.Workload),
		localNamespace: identity.OrUnknown(local.Namespace),
		peerWorkload:   identity.OrUnknown(peer.Workload),
		peerNamespace:  identity.OrUnknown(peer.Namespace),
	}
}

// add counts one record: its event, and the counters it adds since the
// connection's previous record (reports during its life, the rest at
// close), so the sum over a connection is exactly its total.
func (a *aggregator) add(rec *bpf.Record, o *observation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if rec.Kind == bpf.KindFailure {
		a.failures[failureKey{seriesKey: o.key, errorType: errorTypeAttr(rec.Errno)}]++
		return
	}
	v := a.series[o.key]
	if v == nil {
		v = &seriesValue{}
		a.series[o.key] = v
	}
	switch rec.Kind {
	case bpf.KindOpen:
		v.opened++
	case bpf.KindClose:
		v.closed++
	}
	if o.becameOpen {
		v.open++
	}
	if o.wasOpen {
		v.open--
	}
	v.sent += int64(o.delta.sent)
	v.received += int64(o.delta.received)
	v.retrans += int64(o.delta.retrans)
	v.lost += int64(o.delta.lost)
}

// forget takes connections whose close was lost off the open count.
func (a *aggregator) forget(keys []seriesKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range keys {
		if v := a.series[k]; v != nil {
			v.open--
		}
	}
}

// record writes every series' cumulative values into the metrics builder.
func (a *aggregator) record(mb *metadata.MetricsBuilder, now pcommon.Timestamp) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.series {
		mb.RecordTCPConnectionsOpenedDataPoint(now, v.opened, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace)
		mb.RecordTCPConnectionsClosedDataPoint(now, v.closed, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace)
		mb.RecordTCPBytesSentDataPoint(now, v.sent, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace)
		mb.RecordTCPBytesReceivedDataPoint(now, v.received, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace)
		mb.RecordTCPConnectionsOpenDataPoint(now, v.open, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace)
		mb.RecordTCPRetransmitsDataPoint(now, v.retrans, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace)
		mb.RecordTCPPacketsLostDataPoint(now, v.lost, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace)
	}
	for k, n := range a.failures {
		mb.RecordTCPConnectionsFailedDataPoint(now, n, k.direction, k.networkType, k.localWorkload, k.localNamespace, k.peerWorkload, k.peerNamespace, k.errorType)
	}
}

func directionAttr(d bpf.Direction) metadata.AttributeDirection {
	switch d {
	case bpf.DirectionOutbound:
		return metadata.AttributeDirectionOutbound
	case bpf.DirectionInbound:
		return metadata.AttributeDirectionInbound
	}
	return metadata.AttributeDirectionUnknown
}

func networkTypeAttr(rec *bpf.Record) metadata.AttributeNetworkType {
	if rec.LocalAddr.Is6() {
		return metadata.AttributeNetworkTypeIpv6
	}
	return metadata.AttributeNetworkTypeIpv4
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
