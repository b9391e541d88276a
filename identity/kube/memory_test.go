package kube

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/internal/kubetest"
)

// BenchmarkInformerMemory creates pods (with owners, labels and services)
// in a real API server and reports the heap the resolver holds for them
// once synced, per pod and in all. `make bench-kube`.
func BenchmarkInformerMemory(b *testing.B) {
	const pods = 3000
	srv := kubetest.Start(b)
	client := srv.Client(b)
	obj := kubetest.Objects{TB: b, Client: client}
	obj.Namespace("load", "app")
	obj.Node("node-a", "198.51.99.1")
	owners := make([]metav1.OwnerReference, 0, 30)
	for d := range 30 {
		owners = append(owners, obj.Deployment("load", fmt.Sprintf("app-%d", d)))
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range pods {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			o := owners[i%len(owners)]
			obj.Pod(kubetest.PodSpec{
				Namespace: "load", Name: fmt.Sprintf("app-%d-%05d", i%30, i), Node: "node-a", ServiceAccount: "app",
				IP:     netip.AddrFrom4([4]byte{10, 88, byte(i >> 8), byte(i)}).String(),
				Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%30), "version": "v1", "pod-template-hash": "5d8f7c9b4"},
				Owner:  &o,
			})
		}()
	}
	wg.Wait()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	r := New(client, DefaultConfig(), Options{Debounce: 10 * time.Millisecond})
	start := time.Now()
	r.Start()
	defer r.Stop()
	n := pods - 1
	last := netip.AddrFrom4([4]byte{10, 88, byte(n >> 8), byte(n)})
	for r.Resolve(last, 1, time.Now(), identity.RoleClient) == nil {
		if time.Since(start) > 60*time.Second {
			b.Fatal("resolver did not index the pods")
		}
		time.Sleep(10 * time.Millisecond)
	}
	synced := time.Since(start)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	b.ReportMetric(heap/(1<<20), "heap-MiB")
	b.ReportMetric(heap/pods, "heap-B/pod")
	b.ReportMetric(float64(synced.Milliseconds()), "sync-ms")
}
