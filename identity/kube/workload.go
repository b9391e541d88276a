package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcpconn/tcpconn/identity"
)

// owners looks up the controllers of ReplicaSets and Jobs.
type owners interface {
	replicaSetOwner(namespace, name string) *metav1.OwnerReference
	jobOwner(namespace, name string) *metav1.OwnerReference
}

// workloadOf walks a pod's controller chain the way Istio and Kmesh name
// workloads: Deployment via ReplicaSet, CronJob via Job, StatefulSet,
// DaemonSet, any other controller as itself, else the bare pod.
func workloadOf(p *corev1.Pod, o owners) (name, kind string) {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return p.Name, "Pod"
	}
	switch ref.Kind {
	case "ReplicaSet":
		if up := o.replicaSetOwner(p.Namespace, ref.Name); up != nil && up.Kind == "Deployment" {
			return up.Name, up.Kind
		}
	case "Job":
		if up := o.jobOwner(p.Namespace, ref.Name); up != nil && up.Kind == "CronJob" {
			return up.Name, up.Kind
		}
	}
	return ref.Name, ref.Kind
}

// podIdentity is the identity of a pod as a connection end, without a
// destination service.
func podIdentity(p *corev1.Pod, o owners, zone string, cfg *Config) *identity.Identity {
	id := &identity.Identity{
		Pod:         p.Name,
		PodUID:      string(p.UID),
		PodIP:       p.Status.PodIP,
		Namespace:   p.Namespace,
		Node:        p.Spec.NodeName,
		Zone:        zone,
		HostNetwork: p.Spec.HostNetwork,
		Cluster:     cfg.ClusterName,
	}
	id.Workload, id.WorkloadKind = workloadOf(p, o)
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	id.ServiceAccount = sa
	id.Principal = "spiffe://" + cfg.TrustDomain + "/ns/" + p.Namespace + "/sa/" + sa
	l := p.Labels
	id.App = first(l["app.kubernetes.io/name"], l["app"])
	id.Version = first(l["app.kubernetes.io/version"], l["version"])
	id.CanonicalService = first(l["service.istio.io/canonical-name"], id.App, id.Workload)
	id.CanonicalRevision = first(l["service.istio.io/canonical-revision"], id.Version, "latest")
	return id
}

// withService is a copy of a pod identity as the destination of a service.
func withService(pod *identity.Identity, svc *identity.Identity) *identity.Identity {
	id := *pod
	id.Service, id.ServiceName, id.ServiceNamespace = svc.Service, svc.ServiceName, svc.ServiceNamespace
	return &id
}

func serviceIdentity(s *corev1.Service, cfg *Config) *identity.Identity {
	return &identity.Identity{
		Service:          s.Name + "." + s.Namespace + ".svc." + cfg.ClusterDomain,
		ServiceName:      s.Name,
		ServiceNamespace: s.Namespace,
		Namespace:        s.Namespace,
		Cluster:          cfg.ClusterName,
		Virtual:          true,
	}
}

func nodeIdentity(n *corev1.Node, cfg *Config) *identity.Identity {
	return &identity.Identity{Node: n.Name, Zone: n.Labels[corev1.LabelTopologyZone], Workload: n.Name, WorkloadKind: "Node", HostNetwork: true, Cluster: cfg.ClusterName}
}

func first(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
