package tcpconnreceiver

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

// TestKubeletProbeFromTheBridgeNamesTheNode: kubelet probes a pod from
// the address of the node's CNI bridge, which the Node object does not
// list. The receiver reads the node's interface addresses in the host's
// network namespace (here a namespace of the test's, with a bridge) and
// names connections from them as the node; an address the bridge gets
// later is known after the next report walk. The conntrack lookups of
// nat.netns: host open in the same namespace.
func TestKubeletProbeFromTheBridgeNamesTheNode(t *testing.T) {
	node := netnstest.NewNS(t, "tcpn"+strconv.Itoa(os.Getpid()%100000)+"k")
	node.Exec(t, "ip", "link", "add", "cni0", "type", "bridge")
	node.Exec(t, "ip", "addr", "add", "10.212.64.1/24", "dev", "cni0")
	bridge, later := netip.MustParseAddr("10.212.64.1"), netip.MustParseAddr("10.212.65.1")
	podIP := netip.MustParseAddr("10.212.64.10")

	api := kubetest.Start(t)
	obj := kubetest.Objects{TB: t, Client: api.Client(t)}
	obj.Namespace("shop")
	obj.Node("node-a", "10.212.0.1")
	obj.Pod(kubetest.PodSpec{Namespace: "shop", Name: "web-1", Node: "node-a", IP: podIP.String()})
	kubeconfig, err := api.WriteKubeconfig(t.TempDir())
	require.NoError(t, err)
	t.Setenv("KUBECONFIG", kubeconfig)

	cfg := createDefaultConfig()
	cfg.FlushInterval, cfg.ReportInterval = time.Hour, 100*time.Millisecond
	cfg.Logs.Open, cfg.Logs.FlushInterval = true, 10*time.Millisecond
	cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType, cfg.Kubernetes.NodeName = true, kube.AuthKubeConfig, "node-a"
	cfg.NAT.NetNS = NetNSHost
	logs := new(consumertest.LogsSink)
	lr, err := NewFactory().CreateLogs(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, logs)
	require.NoError(t, err)
	rcv := lr.(*tcpconnReceiver)
	src := &scriptedSource{}
	src.setLive() // walks, of no connection: they refresh the node's addresses
	rcv.open = func(bpf.Options) (recordSource, error) { return src, nil }
	rcv.hostNetNS = func() (string, error) { return "/run/netns/" + node.Name, nil }
	host := &statusHost{}
	require.NoError(t, lr.Start(context.Background(), host))
	require.NotNil(t, rcv.nat, "conntrack lookups in the host's namespace")
	isNode := func(a netip.Addr) bool {
		id := rcv.kube.Resolve(a, 51000, time.Now(), identity.RoleClient)
		return id != nil && id.WorkloadKind == "Node" && id.Node == "node-a"
	}
	require.Eventually(t, func() bool {
		e := host.last()
		return e != nil && e.Status() == componentstatus.StatusOK && isNode(bridge)
	}, 30*time.Second, 20*time.Millisecond, "the bridge's address never named the node")
	assert.False(t, isNode(later))

	probe := func(id uint64, peer netip.Addr) bpf.Record {
		r := fixedRecords()[1] // an inbound open
		r.ConnID, r.Start, r.Time = id, time.Now(), time.Now()
		r.LocalAddr, r.PeerAddr, r.PeerPort = podIP, peer, 51000
		return r
	}
	src.push(probe(20, bridge))
	node.Exec(t, "ip", "addr", "add", later.String()+"/24", "dev", "cni0")
	require.Eventually(t, func() bool { return isNode(later) }, 10*time.Second, 20*time.Millisecond,
		"an address the bridge got later never named the node")
	src.push(probe(21, later))
	require.Eventually(t, func() bool { return logs.LogRecordCount() >= 2 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, lr.Shutdown(context.Background()))

	peers := map[string]string{}
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		a := lr.Attributes().AsRaw()
		assert.Equal(t, "web-1", a["destination.k8s.pod.name"], "the pod probed")
		peers[a["source.address"].(string)] = a["source.workload.kind"].(string) + "/" + a["source.workload.name"].(string)
	})
	assert.Equal(t, map[string]string{bridge.String(): "Node/node-a", later.String(): "Node/node-a"}, peers)
}

// Where the host's network namespace cannot be found, the receiver runs
// on: conntrack lookups of nat.netns: host are off, and the log says why
// and names the field.
func TestHostNetNSUnavailable(t *testing.T) {
	t.Setenv("KUBECONFIG", unreachableKubeconfig(t))
	cfg := createDefaultConfig()
	cfg.FlushInterval, cfg.ReportInterval = time.Hour, 0
	cfg.Kubernetes.Enabled, cfg.Kubernetes.AuthType, cfg.Kubernetes.NodeName = true, kube.AuthKubeConfig, "node-a"
	cfg.NAT.NetNS = NetNSHost
	core, logged := observer.New(zapcore.WarnLevel)
	set := receivertest.NewNopSettings(metadata.Type)
	set.Logger = zap.New(core)
	r, err := NewFactory().CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	rcv := r.(*tcpconnReceiver)
	rcv.open = func(bpf.Options) (recordSource, error) { return &scriptedSource{}, nil }
	rcv.hostNetNS = func() (string, error) { return "", errors.New("open /proc/1/ns/net: permission denied") }
	require.NoError(t, r.Start(context.Background(), &statusHost{}))
	require.NoError(t, r.Shutdown(context.Background()))
	assert.Nil(t, rcv.nat)
	nat := logged.FilterMessageSnippet("conntrack lookups of Service destinations are off").All()
	require.Len(t, nat, 1)
	assert.Equal(t, NetNSHost, nat[0].ContextMap()["nat.netns"])
	assert.Contains(t, nat[0].ContextMap()["error"], "permission denied")
	assert.Len(t, logged.FilterMessageSnippet("the node's own network namespace cannot be read").All(), 1)
}
