package podnetns

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// procDir is a proc directory whose processes' ns/net are plain files:
// their inodes stand for namespaces, a hard link for a shared one.
type procDir struct {
	t   *testing.T
	dir string
}

func (p procDir) add(pid int, uid, sameNSAs string) string {
	d := filepath.Join(p.dir, strconv.Itoa(pid))
	require.NoError(p.t, os.MkdirAll(filepath.Join(d, "ns"), 0o755))
	ns := filepath.Join(d, "ns", "net")
	if sameNSAs != "" {
		require.NoError(p.t, os.Link(sameNSAs, ns))
	} else {
		require.NoError(p.t, os.WriteFile(ns, nil, 0o644))
	}
	require.NoError(p.t, os.WriteFile(filepath.Join(d, "cgroup"), []byte("0::/kubepods/besteffort/pod"+uid+"/c0ffee\n"), 0o644))
	return ns
}

// TestResolveRescans: a pod started after the last scan is found by a scan
// of its own; a namespace whose process died and whose inode went to a new
// pod is the new pod's; unknown namespaces are scanned for once.
func TestResolveRescans(t *testing.T) {
	p := procDir{t, t.TempDir()}
	nsA := p.add(10, "0000000a-0000-4000-8000-00000000000a", "")
	s := &Scanner{Proc: p.dir, Cgroups: ProcCgroups{Proc: p.dir}}
	_, err := s.Scan()
	require.NoError(t, err)
	inoA := nsInode(nsA)
	now := time.Now()
	o, ok := s.Resolve(inoA, now)
	require.True(t, ok)
	assert.Equal(t, "0000000a-0000-4000-8000-00000000000a", o.PodUID)

	inoB := nsInode(p.add(11, "0000000b-0000-4000-8000-00000000000b", ""))
	o, ok = s.Resolve(inoB, now)
	require.True(t, ok, "a new pod's namespace is scanned for")
	assert.Equal(t, "0000000b-0000-4000-8000-00000000000b", o.PodUID)

	// pid 10 dies; its namespace's inode goes to a new pod (pid 12).
	p.add(12, "0000000c-0000-4000-8000-00000000000c", nsA)
	require.NoError(t, os.RemoveAll(filepath.Join(p.dir, "10")))
	_, ok = s.Resolve(inoA, now.Add(rescanEvery/2))
	assert.False(t, ok, "stale and too soon to scan again: unknown, not the dead pod")
	o, ok = s.Resolve(inoA, now.Add(rescanEvery))
	require.True(t, ok)
	assert.Equal(t, "0000000c-0000-4000-8000-00000000000c", o.PodUID, "the inode's new pod")

	// A namespace no pod owns: one scan, then no more until the next Scan.
	other := filepath.Join(p.dir, "other")
	require.NoError(t, os.WriteFile(other, nil, 0o644))
	inoX := nsInode(other)
	_, ok = s.Resolve(inoX, now.Add(2*rescanEvery))
	assert.False(t, ok)
	last := s.lastRescan
	_, ok = s.Resolve(inoX, now.Add(4*rescanEvery))
	assert.False(t, ok)
	assert.Equal(t, last, s.lastRescan, "not scanned for again")
}
