package kube

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tcpconn/tcpconn/identity"
)

type noOwners struct{}

func (noOwners) replicaSetOwner(string, string) *metav1.OwnerReference { return nil }
func (noOwners) jobOwner(string, string) *metav1.OwnerReference        { return nil }

func testPod(i int, created time.Time) *corev1.Pod {
	ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Namespace: fmt.Sprintf("ns-%d", i%50), UID: types.UID(fmt.Sprintf("uid-%d", i)), CreationTimestamp: metav1.NewTime(created)},
		Status:     corev1.PodStatus{PodIP: ip.String()},
	}
}

func TestPickEntryPrefersThePodThatHeldTheAddress(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := &podEntry{uid: "a", start: t0, end: t0.Add(10 * time.Second)}
	// The successor's creation time is truncated to the second: it appears
	// to overlap the old pod's last second.
	next := &podEntry{uid: "b", start: t0.Add(9 * time.Second)}
	entries := []*podEntry{next, old}
	assert.Same(t, old, pickEntry(entries, t0.Add(5*time.Second)))
	assert.Same(t, old, pickEntry(entries, t0.Add(9500*time.Millisecond)))
	assert.Same(t, next, pickEntry(entries, t0.Add(11*time.Second)))
	assert.Same(t, next, pickEntry(entries, t0.Add(-time.Hour)), "before any pod: the living one")
	assert.Nil(t, pickEntry([]*podEntry{old}, t0.Add(time.Hour)), "a dead pod does not own later connections")
}

// BenchmarkResolve looks up both ends of a connection in an index of 5000
// pods behind 500 services. It must not allocate.
func BenchmarkResolve(b *testing.B) {
	cfg := DefaultConfig()
	now := time.Now()
	src := sources{owners: noOwners{}}
	for i := range 5000 {
		src.pods = append(src.pods, testPod(i, now.Add(-time.Hour)))
	}
	tcp := corev1.ProtocolTCP
	port := int32(8080)
	for i := range 500 {
		name := fmt.Sprintf("svc-%d", i)
		src.services = append(src.services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.ServiceSpec{ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", i/256, i%256)}}})
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: name}}, Ports: []discoveryv1.EndpointPort{{Port: &port, Protocol: &tcp}}}
		for j := range 10 {
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{src.pods[i*10+j].Status.PodIP}})
		}
		src.slices = append(src.slices, es)
	}
	start := time.Now()
	s := buildSnapshot(src, &cfg)
	build := time.Since(start)
	client, server := netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("10.0.19.135")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if s.resolve(client, 40000, now, identity.RoleClient) == nil || s.resolve(server, 8080, now, identity.RoleServer) == nil {
			b.Fatal("unresolved")
		}
	}
	b.ReportMetric(float64(build.Microseconds()), "index-build-us")
}

// A ClusterIP resolves to its service, marked virtual; the backend reached
// through it resolves to the pod with that service as its destination
// service, even where the pod backs two services on one port (where a
// connection straight to the pod names the first).
func TestResolveBackendKeepsTheDialledService(t *testing.T) {
	cfg := DefaultConfig()
	now := time.Now()
	pod, other := testPod(1, now.Add(-time.Hour)), testPod(2, now.Add(-time.Hour))
	tcp := corev1.ProtocolTCP
	port := int32(8080)
	src := sources{owners: noOwners{}, pods: []*corev1.Pod{pod, other}}
	for i, name := range []string{"a", "b"} {
		src.services = append(src.services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
			Spec: corev1.ServiceSpec{ClusterIPs: []string{fmt.Sprintf("10.96.0.%d", i+1)}}})
		src.slices = append(src.slices, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			Ports:      []discoveryv1.EndpointPort{{Port: &port, Protocol: &tcp}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{pod.Status.PodIP}}},
		})
	}
	s := buildSnapshot(src, &cfg)
	ip := netip.MustParseAddr(pod.Status.PodIP)

	svcB := s.resolve(netip.MustParseAddr("10.96.0.2"), 80, now, identity.RoleServer)
	if assert.NotNil(t, svcB) {
		assert.True(t, svcB.Virtual)
		assert.Equal(t, "b", svcB.ServiceName)
	}
	assert.Equal(t, "a", s.resolve(ip, 8080, now, identity.RoleServer).ServiceName, "straight to the pod: the first service")
	got := s.resolveBackend(svcB, ip, 8080, now)
	if assert.NotNil(t, got) {
		assert.Equal(t, "pod-1", got.Pod)
		assert.Equal(t, "b", got.ServiceName)
		assert.Equal(t, "b.ns.svc.cluster.local", got.Service)
		assert.False(t, got.Virtual)
	}
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() { s.resolveBackend(svcB, ip, 8080, now) }))

	// A backend the slices do not list (yet): the pod, with the service.
	late := s.resolveBackend(svcB, netip.MustParseAddr(other.Status.PodIP), 8080, now)
	if assert.NotNil(t, late) {
		assert.Equal(t, "pod-2", late.Pod)
		assert.Equal(t, "b", late.ServiceName)
	}
	assert.Nil(t, s.resolveBackend(svcB, netip.MustParseAddr("10.9.9.9"), 8080, now), "nobody holds it")
}

// A node IP on a service's node port resolves to the service, marked
// virtual (the node translates it); on any other port to the node.
func TestNodePortResolvesToTheService(t *testing.T) {
	cfg := DefaultConfig()
	now := time.Now()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIPs: []string{"10.96.0.9"},
			Ports: []corev1.ServicePort{{Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}}}}
	tr, err := transform(svc)
	assert.NoError(t, err)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.9.0.1"}}}}
	s := buildSnapshot(sources{owners: noOwners{}, services: []*corev1.Service{tr.(*corev1.Service)}, nodes: []*corev1.Node{node}}, &cfg)
	nodeIP := netip.MustParseAddr("10.9.0.1")
	got := s.resolve(nodeIP, 30080, now, identity.RoleServer)
	if assert.NotNil(t, got) {
		assert.True(t, got.Virtual)
		assert.Equal(t, "web", got.ServiceName)
	}
	assert.Equal(t, "node-a", s.resolve(nodeIP, 22, now, identity.RoleServer).Node)
	assert.Equal(t, "node-a", s.resolve(nodeIP, 30080, now, identity.RoleClient).Node, "a client end is never a service")
}
