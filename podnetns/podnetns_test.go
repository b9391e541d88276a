package podnetns

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

const uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

func TestPodUID(t *testing.T) {
	for name, tc := range map[string]struct{ cgroup, want string }{
		"cgroup v1, cgroupfs driver": {"12:pids:/kubepods/burstable/pod" + uid + "/0123abcd\n11:memory:/kubepods/burstable/pod" + uid + "/0123abcd\n", uid},
		"cgroup v2, cgroupfs driver": {"0::/kubepods/besteffort/pod" + uid + "/0123abcd\n", uid},
		"guaranteed class":           {"0::/kubepods/pod" + uid + "/0123abcd\n", uid},
		"systemd driver": {"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
			"0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-0123abcd.scope\n", uid},
		"nested under another cgroup":    {"8:pids:/tcpconn-test-1/kubepods/besteffort/pod" + uid + "/ctr\n", uid},
		"node process":                   {"0::/system.slice/containerd.service\n", ""},
		"pod-like name outside kubepods": {"0::/user.slice/pod" + uid + "\n", ""},
		"not a UID":                      {"0::/kubepods/besteffort/podnotauid/ctr\n", ""},
		"empty":                          {"", ""},
	} {
		assert.Equal(t, tc.want, PodUID([]byte(tc.cgroup)), name)
	}
}

// fakeCgroups answers for some PIDs and reads the real file for others.
type fakeCgroups map[int]string

func (f fakeCgroups) Cgroup(pid int) ([]byte, error) {
	if s, ok := f[pid]; ok {
		return []byte(s), nil
	}
	return ProcCgroups{Proc: "/proc"}.Cgroup(pid)
}

// TestScanRealNamespaces: real network namespaces and processes, their
// /proc/<pid>/ns/net inodes read for real; the cgroup of one process
// stands in for a pod's (fakeCgroups), the other process's is real and
// names no pod. The host's namespace (PID 1's) is the host.
func TestScanRealNamespaces(t *testing.T) {
	netnstest.RequireRoot(t)
	tag := strconv.Itoa(os.Getpid() % 100000)
	pod := netnstest.NewNS(t, "tcpn"+tag+"a")
	other := netnstest.NewNS(t, "tcpn"+tag+"b")
	podPID := pod.PodProcess(t, uid)
	_ = podPID
	otherPID := startIn(t, other)
	// PID 1's namespace may be out of reach in a sandbox: the test's own
	// (the machine's) stands for the host's.
	s := &Scanner{Proc: "/proc", Cgroups: fakeCgroups{otherPID: "0::/system.slice/other.service\n"}, HostNetNS: "/proc/self/ns/net"}
	m, err := s.Scan()
	require.NoError(t, err)
	podIno, err := pod.Inode()
	require.NoError(t, err)
	otherIno, err := other.Inode()
	require.NoError(t, err)
	o, ok := s.Owner(podIno)
	require.True(t, ok, "the pod's namespace is not found (%d namespaces of pods)", m.Len())
	assert.Equal(t, uid, o.PodUID)
	_, ok = s.Owner(otherIno)
	assert.False(t, ok, "a namespace with no pod process")
	host := nsInode("/proc/self/ns/net")
	o, ok = s.Owner(host)
	assert.True(t, ok && o.Host, "PID 1's namespace is the host's")
	_, ok = s.Owner(0)
	assert.False(t, ok)
}

func startIn(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	// A pod process whose cgroup the fake replaces: any UID will do.
	return ns.PodProcess(t, fmt.Sprintf("%08x-0000-0000-0000-000000000000", os.Getpid()))
}

func BenchmarkScan(b *testing.B) {
	s := NewScanner()
	for b.Loop() {
		if _, err := s.Scan(); err != nil {
			b.Fatal(err)
		}
	}
}
