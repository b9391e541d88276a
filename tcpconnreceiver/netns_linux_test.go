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
	corev1 "k8s.io/api/core/v1"

	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// The network-namespace test's own /24 of 10.206.
var netnsPrefix = [3]byte{10, 206, 4}

// TestKernelLocalEndByNetNS: a Job's pod (a network namespace whose
// process runs in a cgroup naming the pod's UID) finished in the API, and
// its IP went to a new pod; its namespace still connects. By namespace, the
// local end of its connections is still the Job's pod, although the IP
// now resolves to the new pod; the peer keeps the address rule (the server
// side sees the new pod), and without local_by_netns the client side says
// the new pod too.
func TestKernelLocalEndByNetNS(t *testing.T) {
	const request, response, port = 2000, 300, 8080
	routed := netnstest.NewRouted(t, netnsPrefix, 2)
	client, server := routed.PodIPs[0], routed.PodIPs[1]
	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("batch")
	obj.Namespace("data")
	obj.Node("node-a", netip.AddrFrom4([4]byte{netnsPrefix[0], netnsPrefix[1], netnsPrefix[2], 1}).String())
	export := obj.Pod(kubetest.PodSpec{Namespace: "batch", Name: "export-x1y2z", Node: "node-a", IP: client.String(), Owner: ptr(obj.Job("batch", "export"))})
	db := obj.Pod(kubetest.PodSpec{Namespace: "data", Name: "db-0", Node: "node-a", IP: server.String()})
	routed.Pods[0].PodProcess(t, string(export.UID))
	routed.Pods[1].PodProcess(t, string(db.UID))
	// The API says the Job's pod finished and its IP is another pod's.
	time.Sleep(1100 * time.Millisecond)
	obj.FinishPod("batch", export.Name, corev1.PodSucceeded, time.Now())
	time.Sleep(2100 * time.Millisecond)
	obj.Pod(kubetest.PodSpec{Namespace: "batch", Name: "next-a1b2c", Node: "node-a", IP: client.String()})
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	t.Setenv("KUBECONFIG", kubeconfig)

	served := &backends{served: map[uint16]int{}}
	served.serve(t, routed.Pods[1], netip.AddrPortFrom(server, port), 0, request, response)

	for _, byNetNS := range []bool{true, false} {
		name := map[bool]string{true: "by namespace", false: "by address"}[byNetNS]
		t.Run(name, func(t *testing.T) {
			cfg := createDefaultConfig()
			cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
			cfg.FlushInterval = time.Hour
			cfg.Filter.IncludeCIDRs = []string{netip.PrefixFrom(client, 24).Masked().String()}
			cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType, cfg.Kubernetes.NodeName = true, kube.AuthKubeConfig, "node-a"
			cfg.Kubernetes.LocalByNetNS = byNetNS
			mr, lr, metrics, logs, host := startBoth(t, cfg)
			rcv := mr.(*tcpconnReceiver)
			require.Eventually(t, func() bool {
				e := host.last()
				id := rcv.kube.Resolve(client, 40000, time.Now(), identity.RoleClient)
				return e != nil && e.Status() == componentstatus.StatusOK && id != nil && id.Pod == "next-a1b2c"
			}, 30*time.Second, 20*time.Millisecond, "resolver never synchronised")
			require.Equal(t, byNetNS, rcv.netns != nil)

			before := served.count()[0]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := routed.Pods[0].Dial(ctx, netip.AddrPortFrom(server, port).String())
			cancel()
			require.NoError(t, err)
			require.NoError(t, netnstest.Ask(c, request, response))
			require.NoError(t, c.Close())
			require.Eventually(t, func() bool { return served.count()[0] == before+1 }, 5*time.Second, 10*time.Millisecond)
			time.Sleep(200 * time.Millisecond)
			require.NoError(t, mr.Shutdown(context.Background()))
			require.NoError(t, lr.Shutdown(context.Background()))

			wantClient := "next-a1b2c"
			if byNetNS {
				wantClient = export.Name
			}
			sides := map[string]int{}
			forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
				a := lr.Attributes().AsRaw()
				if lr.EventName() != "tcp.connection.close" || a["source.address"] != client.String() || a["destination.address"] != server.String() {
					return
				}
				dir := a["tcpconn.direction"].(string)
				sides[dir]++
				switch dir {
				case "outbound": // the Job's pod's side: the local end is the source
					assert.Equal(t, wantClient, a["source.k8s.pod.name"], "client side, local end")
					assert.Equal(t, "db-0", a["destination.k8s.pod.name"], "client side, peer")
					assert.Equal(t, int64(request), a["tcp.bytes.sent"])
				case "inbound": // the server's side: the client is its peer, by address
					assert.Equal(t, "next-a1b2c", a["source.k8s.pod.name"], "server side, peer: the address rule")
					assert.Equal(t, "db-0", a["destination.k8s.pod.name"], "server side, local end")
				}
			})
			assert.Equal(t, map[string]int{"outbound": 1, "inbound": 1}, sides)
			md := metrics.AllMetrics()[len(metrics.AllMetrics())-1]
			assert.Equal(t, int64(request), sumForResource(md, "tcp.bytes.sent", "k8s.pod.name", wantClient), "the client's bytes on its Resource")
		})
	}
}
