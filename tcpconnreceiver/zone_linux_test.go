package tcpconnreceiver

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// The zone test's own /24 of 10.206.
var zonePrefix = [3]byte{10, 206, 3}

// crossZoneBytes sums tcp.bytes.cross_zone points with the attributes in
// want under the Resource of the local pod, whose zone it returns too.
func crossZoneBytes(md pmetric.Metrics, pod string, want map[string]string) (total int64, zone string) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		attrs := rms.At(i).Resource().Attributes()
		if v, ok := attrs.Get("k8s.pod.name"); !ok || v.Str() != pod {
			continue
		}
		if z, ok := attrs.Get("cloud.availability_zone"); ok {
			zone = z.Str()
		}
		one := pmetric.NewMetrics()
		rms.At(i).CopyTo(one.ResourceMetrics().AppendEmpty())
		total += sumWhereAll(one, "tcp.bytes.cross_zone", want)
	}
	return total, zone
}

// TestKernelCrossZoneBytes: a client pod on node-a (zone-a) talks to a
// server pod on node-b (zone-b) and to one on node-a, the nodes and pods in
// a real API server, the pods network namespaces with real traffic. The
// cross-zone metric counts exactly the bytes to and from the other zone,
// on both ends' Resources (each with its zone), and nothing of the
// same-zone traffic; access-log records carry both ends' node and zone.
func TestKernelCrossZoneBytes(t *testing.T) {
	const (
		request, response = 3000, 700
		crossConns        = 3
		sameConns         = 2
		port              = 8080
	)
	routed := netnstest.NewRouted(t, zonePrefix, 3)
	client, remote, near := routed.PodIPs[0], routed.PodIPs[1], routed.PodIPs[2]
	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("web")
	obj.Namespace("data")
	obj.ZonedNode("node-a", netip.AddrFrom4([4]byte{zonePrefix[0], zonePrefix[1], zonePrefix[2], 1}).String(), "zone-a")
	obj.ZonedNode("node-b", "198.51.100.202", "zone-b")
	obj.Pod(kubetest.PodSpec{Namespace: "web", Name: "frontend-7c9d5-abcde", Node: "node-a", IP: client.String(), Owner: ptr(obj.Deployment("web", "frontend"))})
	obj.Pod(kubetest.PodSpec{Namespace: "data", Name: "db-0", Node: "node-b", IP: remote.String()})
	obj.Pod(kubetest.PodSpec{Namespace: "data", Name: "cache-0", Node: "node-a", IP: near.String()})
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	t.Setenv("KUBECONFIG", kubeconfig)

	served := &backends{served: map[uint16]int{}}
	served.serve(t, routed.Pods[1], netip.AddrPortFrom(remote, port), 0, request, response)
	served.serve(t, routed.Pods[2], netip.AddrPortFrom(near, port), 1, request, response)

	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour
	cfg.Filter.IncludeCIDRs = []string{netip.PrefixFrom(client, 24).Masked().String()}
	cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType, cfg.Kubernetes.NodeName = true, kube.AuthKubeConfig, "node-a"
	mr, lr, metrics, logs, host := startBoth(t, cfg)
	require.Eventually(t, func() bool {
		e := host.last()
		return e != nil && e.Status() == componentstatus.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "resolver never synchronised")
	time.Sleep(300 * time.Millisecond) // the first index build follows the sync

	for i := range crossConns + sameConns {
		target := netip.AddrPortFrom(remote, port)
		if i >= crossConns {
			target = netip.AddrPortFrom(near, port)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := routed.Pods[0].Dial(ctx, target.String())
		cancel()
		require.NoError(t, err)
		require.NoError(t, netnstest.Ask(c, request, response))
		require.NoError(t, c.Close())
	}
	require.Eventually(t, func() bool { n := served.count(); return n[0] == crossConns && n[1] == sameConns }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // the servers' closes follow the client's
	require.NoError(t, mr.Shutdown(context.Background()))
	require.NoError(t, lr.Shutdown(context.Background()))

	md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
	peer := func(workload, ns, zone, dir string) map[string]string {
		return map[string]string{"peer.workload": workload, "peer.namespace": ns, "peer.zone": zone, "network.io.direction": dir}
	}
	got, zone := crossZoneBytes(md, "frontend-7c9d5-abcde", peer("db-0", "data", "zone-b", "transmit"))
	assert.Equal(t, int64(crossConns*request), got, "client to the other zone")
	assert.Equal(t, "zone-a", zone, "the client's zone on its Resource")
	got, _ = crossZoneBytes(md, "frontend-7c9d5-abcde", peer("db-0", "data", "zone-b", "receive"))
	assert.Equal(t, int64(crossConns*response), got, "client from the other zone")
	got, zone = crossZoneBytes(md, "db-0", peer("frontend", "web", "zone-a", "transmit"))
	assert.Equal(t, int64(crossConns*response), got, "server to the other zone")
	assert.Equal(t, "zone-b", zone, "the server's zone on its Resource")
	got, _ = crossZoneBytes(md, "db-0", peer("frontend", "web", "zone-a", "receive"))
	assert.Equal(t, int64(crossConns*request), got, "server from the other zone")
	got, _ = crossZoneBytes(md, "frontend-7c9d5-abcde", map[string]string{"peer.workload": "cache-0"})
	assert.Zero(t, got, "same-zone traffic is not cross-zone")
	got, zone = crossZoneBytes(md, "cache-0", map[string]string{})
	assert.Zero(t, got, "same-zone traffic is not cross-zone")
	assert.Equal(t, "zone-a", zone)
	// tcp.bytes.sent is unchanged beside it: all the traffic, both zones.
	assert.Equal(t, int64((crossConns+sameConns)*request), sumForResource(md, "tcp.bytes.sent", "k8s.pod.name", "frontend-7c9d5-abcde"))

	closes := map[string]int{}
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		if lr.EventName() != "tcp.connection.close" || a["source.address"] != client.String() {
			return
		}
		assert.Equal(t, "node-a", a["source.k8s.node.name"])
		assert.Equal(t, "zone-a", a["source.cloud.availability_zone"])
		switch a["destination.address"] {
		case remote.String():
			assert.Equal(t, "node-b", a["destination.k8s.node.name"])
			assert.Equal(t, "zone-b", a["destination.cloud.availability_zone"])
		case near.String():
			assert.Equal(t, "node-a", a["destination.k8s.node.name"])
			assert.Equal(t, "zone-a", a["destination.cloud.availability_zone"])
		}
		closes[a["destination.address"].(string)+" "+a["tcpconn.direction"].(string)]++
	})
	assert.Equal(t, map[string]int{
		remote.String() + " outbound": crossConns, remote.String() + " inbound": crossConns,
		near.String() + " outbound": sameConns, near.String() + " inbound": sameConns,
	}, closes, "every close record, on both ends")
}
