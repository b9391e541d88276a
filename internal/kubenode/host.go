package kubenode

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sysctls the node's parts change: kubelet sets the kernel's panic and
// overcommit defaults and key quotas, the node forwards and bridges through
// netfilter so kube-proxy sees pod-to-pod Service traffic, kube-proxy may
// set route_localnet and conntrack sizes.
var sysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
	"net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
}

// dirs the node's parts may create outside Dir whatever they are told.
var hostDirs = []string{"/run/containerd", "/var/lib/cni", "/var/lib/kubelet", "/etc/cni", "/var/log/pods", "/var/log/containers"}

// hostState is the host as it was before the node came up.
type hostState struct {
	Sysctls map[string]string `json:"sysctls"`
	Ruleset string            `json:"ruleset"`
	Netns   []string          `json:"netns"`
	Existed map[string]bool   `json:"existed"`
}

func saveHost() (hostState, error) {
	if hasNodeIP() {
		return hostState{}, fmt.Errorf("a node is already up here (%s is on lo): take it down first (make node-down)", NodeIP)
	}
	h := hostState{Sysctls: map[string]string{}, Existed: map[string]bool{}}
	for _, s := range sysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			h.Sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	out, err := exec.Command("nft", "list", "ruleset").Output()
	if err != nil {
		return h, fmt.Errorf("nft list ruleset: %w", err)
	}
	h.Ruleset = string(out)
	h.Netns = netnsNames()
	for _, d := range hostDirs {
		_, err := os.Stat(d)
		h.Existed[d] = err == nil
	}
	return h, nil
}

func prepareHost() error {
	for _, args := range [][]string{
		{"addr", "add", NodeIP + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
	}
	for s, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"} {
		if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", s, err)
		}
	}
	return nil
}

// killPods ends every process in a pod's cgroup (/kubepods...) and the
// containerd shims, which outlive containerd.
func killPods() error {
	for round := 0; round < 50; round++ {
		pids := podProcesses()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("pod processes still running: %v", podProcesses())
}

func podProcesses() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		cg, _ := os.ReadFile("/proc/" + e.Name() + "/cgroup")
		if strings.HasPrefix(string(comm), "containerd-shim") || bytes.Contains(cg, []byte(":/kubepods")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// hasNodeIP says whether the node's address is on lo, where Up puts it:
// this kernel has no dummy links.
func hasNodeIP() bool {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return false
	}
	addrs, _ := lo.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.String() == NodeIP {
			return true
		}
	}
	return false
}

func netnsNames() []string {
	entries, _ := os.ReadDir("/run/netns")
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// restoreHost undoes what the node did to the host. It goes on past errors
// so one leftover does not keep the rest in place.
func restoreHost(h hostState, dir string) error {
	var errs []error
	before := map[string]bool{}
	for _, n := range h.Netns {
		before[n] = true
	}
	var targets []string
	for _, n := range netnsNames() {
		if !before[n] && strings.HasPrefix(n, "cni-") {
			targets = append(targets, "/run/netns/"+n)
		}
	}
	errs = append(errs, unmountUnder(append(targets, dir)...))
	for _, t := range targets {
		if err := os.Remove(t); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeCgroups())
	if _, err := net.InterfaceByName(Bridge); err == nil {
		if out, err := exec.Command("ip", "link", "del", Bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %w: %s", Bridge, err, out))
		}
	}
	if hasNodeIP() {
		if out, err := exec.Command("ip", "addr", "del", NodeIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip addr del %s: %w: %s", NodeIP, err, out))
		}
	}
	{
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader("flush ruleset\n" + h.Ruleset)
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("restore nft ruleset: %w: %s", err, out))
		}
	}
	for s, v := range h.Sysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil && strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore sysctl %s: %w", s, err))
			}
		}
	}
	for d, existed := range h.Existed {
		if !existed {
			_ = os.RemoveAll(d)
		}
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount at or below the given paths, deepest
// first (kubelet's volumes, containerd's snapshots, CNI's namespaces).
func unmountUnder(roots ...string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMount(fields[4])
		for _, r := range roots {
			if p == r || strings.HasPrefix(p, filepath.Clean(r)+"/") {
				points = append(points, p)
				break
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// removeCgroups removes the kubepods hierarchy kubelet made under every
// cgroup v1 controller (or the v2 root), deepest first.
func removeCgroups() error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if _, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil {
		roots = append(roots, "/sys/fs/cgroup/kubepods")
	}
	var errs []error
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
