package kube

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// transform keeps only the fields the resolver reads, so the informer
// caches stay small on large clusters. It runs before objects are stored.
func transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return trimPod(o), nil
	case *corev1.Service:
		return &corev1.Service{
			ObjectMeta: trimMeta(o.ObjectMeta, false),
			Spec:       corev1.ServiceSpec{ClusterIP: o.Spec.ClusterIP, ClusterIPs: o.Spec.ClusterIPs, Type: o.Spec.Type, Ports: nodePorts(o.Spec.Ports)},
		}, nil
	case *discoveryv1.EndpointSlice:
		out := &discoveryv1.EndpointSlice{ObjectMeta: trimMeta(o.ObjectMeta, true), AddressType: o.AddressType, Ports: o.Ports}
		out.Endpoints = make([]discoveryv1.Endpoint, len(o.Endpoints))
		for i, e := range o.Endpoints {
			out.Endpoints[i] = discoveryv1.Endpoint{Addresses: e.Addresses, TargetRef: e.TargetRef}
		}
		return out, nil
	case *appsv1.ReplicaSet:
		return &appsv1.ReplicaSet{ObjectMeta: trimOwnerMeta(o.ObjectMeta)}, nil
	case *batchv1.Job:
		return &batchv1.Job{ObjectMeta: trimOwnerMeta(o.ObjectMeta)}, nil
	case *corev1.Node:
		out := &corev1.Node{ObjectMeta: trimMeta(o.ObjectMeta, false), Status: corev1.NodeStatus{Addresses: o.Status.Addresses}}
		if zone := o.Labels[corev1.LabelTopologyZone]; zone != "" {
			out.Labels = map[string]string{corev1.LabelTopologyZone: zone} // the one label read
		}
		return out, nil
	}
	return obj, nil
}

// nodePorts keeps the node ports of a service's TCP ports, and nothing else.
func nodePorts(ports []corev1.ServicePort) []corev1.ServicePort {
	var out []corev1.ServicePort
	for _, p := range ports {
		if p.NodePort != 0 && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			out = append(out, corev1.ServicePort{Protocol: corev1.ProtocolTCP, NodePort: p.NodePort})
		}
	}
	return out
}

func trimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: trimMeta(p.ObjectMeta, true),
		Spec: corev1.PodSpec{
			NodeName:           p.Spec.NodeName,
			ServiceAccountName: p.Spec.ServiceAccountName,
			HostNetwork:        p.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs, Phase: p.Status.Phase},
	}
	if at := finishedAt(p); !at.IsZero() {
		// A finished pod: keep only when it finished, as one terminated
		// container state (finishedAt reads it back).
		out.Status.ContainerStatuses = []corev1.ContainerStatus{{
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(at)}},
		}}
	}
	out.ObjectMeta.CreationTimestamp = p.CreationTimestamp
	out.ObjectMeta.OwnerReferences = p.OwnerReferences
	if p.Spec.HostNetwork {
		// Only host-network pods are resolved by port.
		for _, c := range p.Spec.Containers {
			var ports []corev1.ContainerPort
			for _, cp := range c.Ports {
				ports = append(ports, corev1.ContainerPort{ContainerPort: cp.ContainerPort, HostPort: cp.HostPort, Protocol: cp.Protocol})
			}
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: ports})
		}
	}
	return out
}

func trimMeta(m metav1.ObjectMeta, labels bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
	if labels {
		out.Labels = m.Labels
	}
	return out
}

func trimOwnerMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	out := trimMeta(m, false)
	out.OwnerReferences = m.OwnerReferences
	return out
}

// finished reports whether a pod has run to its end (a Job's pod): the
// network plugin gives its IP to another pod although the API keeps it.
func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// finishedAt is when a finished pod finished: the last of its containers'
// terminated.finishedAt, else the last transition of its conditions, else
// zero (not finished, or no time known: then it never releases its IP
// before it is deleted).
func finishedAt(p *corev1.Pod) time.Time {
	if !finished(p) {
		return time.Time{}
	}
	var last time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.FinishedAt.After(last) {
			last = t.FinishedAt.Time
		}
	}
	if !last.IsZero() {
		return last
	}
	for _, c := range p.Status.Conditions {
		if c.LastTransitionTime.After(last) {
			last = c.LastTransitionTime.Time
		}
	}
	return last
}
