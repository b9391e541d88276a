package podnetns

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeProc makes <dir>/<pid>/ns/net for each PID: a file when readable, a
// link to nowhere when not (what an unreadable ns link looks like to open).
func fakeProc(t *testing.T, readable map[string]bool) string {
	t.Helper()
	dir := t.TempDir()
	for pid, ok := range readable {
		ns := filepath.Join(dir, pid, "ns")
		require.NoError(t, os.MkdirAll(ns, 0o755))
		if ok {
			require.NoError(t, os.WriteFile(filepath.Join(ns, "net"), nil, 0o444))
		} else {
			require.NoError(t, os.Symlink("net:[4026531833]", filepath.Join(ns, "net")))
		}
	}
	return dir
}

// The host's namespace is PID 1's where it can be read, else PID 2's
// (kthreadd's); with neither, an error that names both.
func TestHostNetNS(t *testing.T) {
	for name, tc := range map[string]struct {
		readable map[string]bool
		want     string
	}{
		"PID 1 readable":               {map[string]bool{"1": true, "2": true}, "1"},
		"PID 1 unreadable (a sandbox)": {map[string]bool{"1": false, "2": true}, "2"},
		"PID 1 absent":                 {map[string]bool{"2": true}, "2"},
		"PID 1 only":                   {map[string]bool{"1": true}, "1"},
	} {
		proc := fakeProc(t, tc.readable)
		got, err := HostNetNS(proc)
		require.NoError(t, err, name)
		assert.Equal(t, filepath.Join(proc, tc.want, "ns", "net"), got, name)
	}
	proc := fakeProc(t, map[string]bool{"1": false})
	_, err := HostNetNS(proc)
	require.Error(t, err)
	assert.ErrorContains(t, err, filepath.Join(proc, "1", "ns", "net"))
	assert.ErrorContains(t, err, filepath.Join(proc, "2", "ns", "net"))
	assert.ErrorContains(t, err, "host's PID namespace")
}
