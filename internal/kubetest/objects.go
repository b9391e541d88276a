package kubetest

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Objects creates API objects the way a cluster's controllers would, since
// none run here. Every call fails the test on error.
type Objects struct {
	TB     testing.TB
	Client kubernetes.Interface
}

func (o Objects) ctx() context.Context { return context.Background() }

// Namespace creates a namespace and a service account in it.
func (o Objects) Namespace(name string, serviceAccounts ...string) {
	o.TB.Helper()
	if _, err := o.Client.CoreV1().Namespaces().Create(o.ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		o.TB.Fatal(err)
	}
	for _, sa := range serviceAccounts {
		if _, err := o.Client.CoreV1().ServiceAccounts(name).Create(o.ctx(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			o.TB.Fatal(err)
		}
	}
}

// Node creates a node with an internal IP.
func (o Objects) Node(name, ip string) { o.ZonedNode(name, ip, "") }

// ZonedNode creates a node with an internal IP in a zone (its
// topology.kubernetes.io/zone label; none when zone is empty).
func (o Objects) ZonedNode(name, ip, zone string) {
	o.TB.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if zone != "" {
		node.Labels = map[string]string{corev1.LabelTopologyZone: zone}
	}
	n, err := o.Client.CoreV1().Nodes().Create(o.ctx(), node, metav1.CreateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if _, err := o.Client.CoreV1().Nodes().UpdateStatus(o.ctx(), n, metav1.UpdateOptions{}); err != nil {
		o.TB.Fatal(err)
	}
}

// Deployment creates a Deployment and the ReplicaSet it owns, and returns
// the owner reference pods of that ReplicaSet carry.
func (o Objects) Deployment(ns, name string) metav1.OwnerReference {
	o.TB.Helper()
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	tmpl := podTemplate(name)
	d, err := o.Client.AppsV1().Deployments(ns).Create(o.ctx(), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       appsv1.DeploymentSpec{Selector: sel, Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	rs, err := o.Client.AppsV1().ReplicaSets(ns).Create(o.ctx(), &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-5d8f7c9b4", OwnerReferences: []metav1.OwnerReference{controllerRef("apps/v1", "Deployment", d.Name, string(d.UID))}},
		Spec:       appsv1.ReplicaSetSpec{Selector: sel, Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	return controllerRef("apps/v1", "ReplicaSet", rs.Name, string(rs.UID))
}

// CronJob creates a Job owned by a CronJob (which is not created: no
// controller reads it) and returns the owner reference of the Job's pods.
func (o Objects) CronJob(ns, name string) metav1.OwnerReference {
	o.TB.Helper()
	j, err := o.Client.BatchV1().Jobs(ns).Create(o.ctx(), &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-29000000", OwnerReferences: []metav1.OwnerReference{controllerRef("batch/v1", "CronJob", name, "00000000-0000-0000-0000-0000000c0001")}},
		Spec:       batchv1.JobSpec{Template: jobTemplate(name)},
	}, metav1.CreateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	return controllerRef("batch/v1", "Job", j.Name, string(j.UID))
}

// Job creates a Job of its own (no CronJob) and returns the owner
// reference of its pods.
func (o Objects) Job(ns, name string) metav1.OwnerReference {
	o.TB.Helper()
	j, err := o.Client.BatchV1().Jobs(ns).Create(o.ctx(), &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       batchv1.JobSpec{Template: jobTemplate(name)},
	}, metav1.CreateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	return controllerRef("batch/v1", "Job", j.Name, string(j.UID))
}

// FinishPod moves a pod to phase (Succeeded or Failed) as the kubelet does
// when its containers end: its container terminated at finishedAt, its
// Ready condition false since then. The pod keeps its IP in the API.
func (o Objects) FinishPod(ns, name string, phase corev1.PodPhase, finishedAt time.Time) {
	o.TB.Helper()
	p, err := o.Client.CoreV1().Pods(ns).Get(o.ctx(), name, metav1.GetOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	at := metav1.NewTime(finishedAt)
	code := int32(0)
	if phase == corev1.PodFailed {
		code = 1
	}
	p.Status.Phase = phase
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: at, Reason: "PodCompleted"}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", Image: "example.invalid/app:1", State: corev1.ContainerState{
		Terminated: &corev1.ContainerStateTerminated{ExitCode: code, StartedAt: p.CreationTimestamp, FinishedAt: at},
	}}}
	if _, err := o.Client.CoreV1().Pods(ns).UpdateStatus(o.ctx(), p, metav1.UpdateOptions{}); err != nil {
		o.TB.Fatal(err)
	}
}

// PodSpec describes a pod to create.
type PodSpec struct {
	Namespace, Name, Node, ServiceAccount, IP string
	Labels                                    map[string]string
	Owner                                     *metav1.OwnerReference
	HostNetwork                               bool
	Ports                                     []int32
}

// Pod creates a pod and sets its IP through the status subresource.
func (o Objects) Pod(s PodSpec) *corev1.Pod {
	o.TB.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: s.Labels},
		Spec: corev1.PodSpec{
			NodeName:           s.Node,
			ServiceAccountName: s.ServiceAccount,
			HostNetwork:        s.HostNetwork,
			Containers:         []corev1.Container{{Name: "main", Image: "example.invalid/app:1"}},
		},
	}
	for _, port := range s.Ports {
		cp := corev1.ContainerPort{ContainerPort: port, Protocol: corev1.ProtocolTCP}
		if s.HostNetwork {
			cp.HostPort = port
		}
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, cp)
	}
	if s.Owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*s.Owner}
	}
	created, err := o.Client.CoreV1().Pods(s.Namespace).Create(o.ctx(), p, metav1.CreateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	created.Status.Phase = corev1.PodRunning
	if s.IP != "" { // none: the kubelet has not reported the pod's address yet
		created.Status.PodIP = s.IP
		created.Status.PodIPs = []corev1.PodIP{{IP: s.IP}}
	}
	updated, err := o.Client.CoreV1().Pods(s.Namespace).UpdateStatus(o.ctx(), created, metav1.UpdateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	return updated
}

// DeletePod deletes a pod at once.
func (o Objects) DeletePod(ns, name string) {
	o.TB.Helper()
	zero := int64(0)
	if err := o.Client.CoreV1().Pods(ns).Delete(o.ctx(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		o.TB.Fatal(err)
	}
}

// Service creates a service (headless when clusterIP is "None") and the
// EndpointSlice that a controller would make for the given pods: every
// pod IP on every target port. It returns the allocated ClusterIP.
func (o Objects) Service(ns, name, clusterIP string, port int32, targetPort int32, pods ...*corev1.Pod) string {
	o.TB.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: clusterIP, Ports: []corev1.ServicePort{{Name: "tcp", Port: port, Protocol: corev1.ProtocolTCP}}},
	}
	created, err := o.Client.CoreV1().Services(ns).Create(o.ctx(), svc, metav1.CreateOptions{})
	if err != nil {
		o.TB.Fatal(err)
	}
	tcp := corev1.ProtocolTCP
	portName := "tcp"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &targetPort, Protocol: &tcp}},
	}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{p.Status.PodIP},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		})
	}
	if _, err := o.Client.DiscoveryV1().EndpointSlices(ns).Create(o.ctx(), es, metav1.CreateOptions{}); err != nil {
		o.TB.Fatal(err)
	}
	return created.Spec.ClusterIP
}

func controllerRef(apiVersion, kind, name, uid string) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(uid), Controller: &t}
}

func podTemplate(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "example.invalid/app:1"}}},
	}
}

func jobTemplate(app string) corev1.PodTemplateSpec {
	t := podTemplate(app)
	t.Spec.RestartPolicy = corev1.RestartPolicyNever
	return t
}
