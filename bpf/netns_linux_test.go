//go:build linux

package bpf

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// inodes is the set of namespaces paths name.
func inodes(t *testing.T, paths []string) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			out[st.Ino] = p
		}
	}
	return out
}

// TestNetnsFinder: the walk's list of namespaces finds a namespace whose
// only process started after the last walk (a new process is read), keeps
// one path per namespace, and drops a namespace once its process exits,
// with the process.
func TestNetnsFinder(t *testing.T) {
	netnstest.RequireRoot(t)
	var f netnsFinder
	first := inodes(t, f.list())
	require.NotEmpty(t, first)
	assert.Len(t, first, len(f.paths), "one path a namespace")

	cmd := exec.Command("unshare", "--net", "sleep", "60")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := strconv.Itoa(cmd.Process.Pid)
	nsPath := fmt.Sprintf("/proc/%s/ns/net", pid)
	var ns unix.Stat_t
	require.Eventually(t, func() bool {
		// unshare runs sleep in its new namespace: wait for the exec.
		return unix.Stat(nsPath, &ns) == nil && first[ns.Ino] == ""
	}, 5*time.Second, 10*time.Millisecond)

	second := inodes(t, f.list())
	require.Contains(t, second, ns.Ino, "the new process's namespace")
	assert.NotEqual(t, 0, f.walks%netnsFullScan, "found without a full scan")
	assert.Equal(t, ns.Ino, f.byPid[pid])
	for ino := range first {
		if _, still := inodes(t, []string{first[ino]})[ino]; still {
			assert.Contains(t, second, ino, "a namespace of the first list")
		}
	}

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	third := inodes(t, f.list())
	assert.NotContains(t, third, ns.Ino, "gone with its process")
	_, cached := f.byPid[pid]
	assert.False(t, cached, "the exited process is forgotten")
	assert.False(t, slices.Contains(f.paths, nsPath))
}
