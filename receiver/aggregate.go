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
	opened, closed, sent, received int64
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

// add counts one record. Bytes are counted from close records, which carry
// each connection's exact totals.
func (a *aggregator) add(rec *bpf.Record, local, peer *identity.Identity) {
	k := keyOf(rec, local, peer)
	a.mu.Lock()
	defer a.mu.Unlock()
	if rec.Kind == bpf.KindFailure {
		a.failures[failureKey{seriesKey: k, errorType: errorTypeAttr(rec.Errno)}]++
		return
	}
	v := a.series[k]
	if v == nil {
		v = &seriesValue{}
		a.series[k] = v
	}
	switch rec.Kind {
	case bpf.KindOpen:
		v.opened++
	case bpf.KindClose:
		v.closed++
		v.sent += int64(rec.BytesSent)
		v.received += int64(rec.BytesReceived)
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
