package kubenode

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/tcpconn/tcpconn/internal/kubetest"
)

// writeFiles writes every configuration file the node's parts read.
func (n *Node) writeFiles(p *pki) error {
	files := map[string]string{
		"kubeconfig":                 n.kubeconfig("admin"),
		"kubelet.kubeconfig":         n.kubeconfig("kubelet"),
		"containerd/config.toml":     n.containerdConfig(),
		"cni/net.d/10-pods.conflist": cniConfig(n.path("cni/ipam")),
		"kubelet/config.yaml":        n.kubeletConfig(p),
		"kube-proxy.yaml":            n.proxyConfig(),
	}
	for name, text := range files {
		path := n.path(name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) kubeconfig(user string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster:
    server: https://%[2]s:%[3]d
    certificate-authority: %[4]s
users:
- name: %[5]s
  user:
    client-certificate: %[6]s
    client-key: %[7]s
contexts:
- name: %[1]s
  context: {cluster: %[1]s, user: %[5]s}
current-context: %[1]s
`, NodeName, NodeIP, APIPort, n.path("pki/ca.crt"), user, n.path("pki/"+user+".crt"), n.path("pki/"+user+".key"))
}

// containerdConfig: its own root, state and socket, the CRI plugin with the
// node's CNI configuration and pause image. restrict_oom_score_adj because
// root here lacks CAP_SYS_RESOURCE: runc cannot lower a score and every
// sandbox would fail.
func (n *Node) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
`, n.path("containerd/root"), n.path("containerd/state"), n.socket(), n.socket()+".ttrpc",
		n.path("containerd/opt"), PauseImage, n.path("cni/net.d"))
}

func (n *Node) socket() string { return n.path("containerd/containerd.sock") }

// cniConfig: pods on a bridge whose gateway address is the node's, no
// masquerading (nothing leaves the machine), hairpin so a pod reaches itself
// through its Service.
func cniConfig(ipamDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "tcpconn-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %[1]q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %[2]q, "gateway": %[3]q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %[4]q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, Bridge, PodCIDR, PodGateway, ipamDir)
}

// kubeletConfig: cgroupfs on this machine's cgroup v1, no swap check, the
// node's own addresses and directories, and eviction thresholds low enough
// that a full build cache does not evict the tests' pods.
func (n *Node) kubeletConfig(p *pki) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %[3]q}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%[4]s
podLogsDir: %[5]q
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
`, NodeIP, KubeletPort, p.path("ca.crt"), n.socket(), n.path("pod-logs"))
}

func (n *Node) proxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %[1]q}
mode: %[2]s
hostnameOverride: %[3]s
clusterCIDR: %[4]s
nodePortAddresses: [%[5]s/32]
healthzBindAddress: ""
metricsBindAddress: "127.0.0.1:%[6]d"
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, syncPeriod: 5s, minSyncPeriod: 0s}
nftables: {syncPeriod: 5s, minSyncPeriod: 0s}
`, n.path("kubeconfig"), n.ProxyMode, NodeName, PodCIDR, NodeIP, kubetest.FreePort())
}
