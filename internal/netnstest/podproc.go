package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// PodProcess starts a process in the namespace and moves it into a cgroup
// whose path names a pod UID as the kubelet's does
// (<test cgroup>/kubepods/besteffort/pod<uid>/<container>), under the
// test process's own cgroup: in the cgroup v1 pids hierarchy when mounted,
// else in the unified (v2) one. It returns the process's PID; the process
// and the cgroups go at the end of the test.
func (ns *NS) PodProcess(tb testing.TB, podUID string) int {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "600")
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start a process in %s: %v", ns.Name, err)
	}
	var dir, top string
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		// Then its cgroups, deepest first.
		for d := dir; dir != "" && d != top; d = filepath.Dir(d) {
			_ = os.Remove(d)
		}
	})
	root, own, err := ownCgroup()
	if err != nil {
		tb.Fatalf("cgroup: %v", err)
	}
	top = filepath.Join(root, own)
	dir = filepath.Join(top, fmt.Sprintf("tcpconn-test-%d", os.Getpid()), "kubepods", "besteffort", "pod"+podUID, "ctr-"+ns.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("cgroup: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		tb.Fatalf("move %d into %s: %v", cmd.Process.Pid, dir, err)
	}
	return cmd.Process.Pid
}

// ownCgroup returns a cgroup mount to use and this process's cgroup path in
// it: the v1 pids hierarchy if mounted, else the unified hierarchy.
func ownCgroup() (mount, path string, err error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", err
	}
	var unified string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[1] == "pids":
			if st, err := os.Stat("/sys/fs/cgroup/pids"); err == nil && st.IsDir() {
				return "/sys/fs/cgroup/pids", f[2], nil
			}
		case f[0] == "0" && f[1] == "":
			unified = f[2]
		}
	}
	for _, m := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(m, "cgroup.procs")); err == nil {
			return m, unified, nil
		}
	}
	return "", "", fmt.Errorf("no cgroup hierarchy to use")
}
