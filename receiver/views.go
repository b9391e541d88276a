package receiver

import (
	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/receiver/internal/metadata"
)

// Profiles name the metric families a receiver emits.
const (
	ProfileOTel  = "otel"
	ProfileIstio = "istio"
	ProfileKmesh = "kmesh"
)

func orU(s string) string { return identity.OrUnknown(s) }

func directionAttr(d bpf.Direction) metadata.AttributeDirection {
	switch d {
	case bpf.DirectionOutbound:
		return metadata.AttributeDirectionOutbound
	case bpf.DirectionInbound:
		return metadata.AttributeDirectionInbound
	}
	return metadata.AttributeDirectionUnknown
}

// resourceEnd is the local end as the otel profile puts it on the Resource:
// raw values, empty when unknown (and then left off the Resource).
func resourceEnd(id *identity.Identity) endLabels {
	return endLabels{workload: id.Workload, kind: id.WorkloadKind, namespace: id.Namespace, pod: id.Pod, podUID: id.PodUID,
		canonicalService: id.CanonicalService, canonicalRevision: id.CanonicalRevision}
}

// istioEnd is one end's block of Istio labels: unknown is "unknown".
func istioEnd(id *identity.Identity) endLabels {
	return endLabels{workload: orU(id.Workload), namespace: orU(id.Namespace), principal: orU(id.Principal),
		app: orU(id.App), version: orU(id.Version), canonicalService: orU(id.CanonicalService),
		canonicalRevision: orU(id.CanonicalRevision), cluster: orU(id.Cluster)}
}

func otelWorkloadKey(c *connRef, e metadata.AttributeErrorType, k *seriesKey) {
	k.direction, k.errorType = directionAttr(c.direction), e
	k.networkType = metadata.AttributeNetworkTypeIpv4
	if c.ipv6 {
		k.networkType = metadata.AttributeNetworkTypeIpv6
	}
	k.local = resourceEnd(c.local)
	k.peer = endLabels{workload: orU(c.peer.Workload), kind: orU(c.peer.WorkloadKind), namespace: orU(c.peer.Namespace)}
}

func otelServiceKey(c *connRef, e metadata.AttributeErrorType, k *seriesKey) {
	k.direction, k.errorType = directionAttr(c.direction), e
	k.local = resourceEnd(c.local)
	srv := c.server()
	k.svcName, k.svcNamespace = orU(srv.ServiceName), orU(srv.ServiceNamespace)
}

// istioKey is Istio's (and Kmesh's service view's) label set: both ends'
// blocks and the destination service.
func istioKey(c *connRef, e metadata.AttributeErrorType, k *seriesKey) {
	k.direction, k.errorType = directionAttr(c.direction), e
	k.local, k.peer = istioEnd(c.local), istioEnd(c.peer)
	srv := c.server()
	k.svcHost, k.svcName, k.svcNamespace = orU(srv.Service), orU(srv.ServiceName), orU(srv.ServiceNamespace)
}

// kmeshWorkloadKey is Kmesh's workload label set: both ends' blocks and
// the destination pod, no service.
func kmeshWorkloadKey(c *connRef, e metadata.AttributeErrorType, k *seriesKey) {
	k.direction, k.errorType = directionAttr(c.direction), e
	k.local, k.peer = istioEnd(c.local), istioEnd(c.peer)
	srv := c.server()
	dst := &k.peer
	if c.direction == bpf.DirectionInbound {
		dst = &k.local
	}
	dst.pod, dst.podAddress = orU(srv.Pod), orU(srv.PodIP)
}

// newViews builds the views a profile emits.
func newViews(cfg *Config) []*view {
	var out []*view
	add := func(kind metadata.AttributeView, p func(*connRef, metadata.AttributeErrorType, *seriesKey)) {
		out = append(out, &view{kind: kind, project: p, series: map[seriesKey]*series{}, limit: cfg.SeriesLimit})
	}
	switch cfg.Profile {
	case ProfileIstio:
		// Istio's one metric family carries workloads and services alike.
		add(metadata.AttributeViewService, istioKey)
	case ProfileKmesh:
		if cfg.Views.Workload {
			add(metadata.AttributeViewWorkload, kmeshWorkloadKey)
		}
		if cfg.Views.Service {
			add(metadata.AttributeViewService, istioKey)
		}
	default:
		if cfg.Views.Workload {
			add(metadata.AttributeViewWorkload, otelWorkloadKey)
		}
		if cfg.Views.Service {
			add(metadata.AttributeViewService, otelServiceKey)
		}
	}
	return out
}
