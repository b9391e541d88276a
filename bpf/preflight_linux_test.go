package bpf

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestLoadWithoutPrivileges re-runs this test binary as an unprivileged
// user with no capabilities: Load must fail and name what is missing.
func TestLoadWithoutPrivileges(t *testing.T) {
	if os.Getenv("TCPCONN_UNPRIVILEGED_CHILD") == "1" {
		_, err := Load(Options{})
		if err == nil {
			t.Fatal("Load succeeded without privileges")
		}
		t.Log(err)
		require.ErrorContains(t, err, "cannot load the tcpconn probe: missing capabilities CAP_BPF, CAP_PERFMON")
		return
	}
	netnstest.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		netnstest.Unavailable(t, "setpriv (util-linux)")
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
		os.Args[0], "-test.run=^TestLoadWithoutPrivileges$", "-test.v")
	cmd.Env = append(os.Environ(), "TCPCONN_UNPRIVILEGED_CHILD=1")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	require.NoError(t, err, "child test failed")
	require.Contains(t, string(out), "missing capabilities CAP_BPF, CAP_PERFMON")
}

// A kernel without BTF is named as such, with the path and the config
// option it needs.
func TestPreflightWithoutBTF(t *testing.T) {
	err := preflight("/nonexistent/btf/vmlinux")
	require.ErrorContains(t, err, "cannot load the tcpconn probe: missing kernel BTF (stat /nonexistent/btf/vmlinux: no such file or directory; the kernel needs CONFIG_DEBUG_INFO_BTF=y)")
}
