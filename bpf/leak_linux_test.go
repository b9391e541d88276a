package bpf

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// bpfFDs counts this process's BPF objects: programs, maps and links are
// file descriptors, so nothing of the probe outlives them.
func bpfFDs(t *testing.T) map[string]int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	out := map[string]int{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, "anon_inode:bpf") {
			out[target]++
		}
	}
	return out
}

// TestNothingLeaks: a probe that ran (reads, walks) and was
// closed, and probes that failed to start, leave no program, map or link
// behind, and say why they failed.
func TestNothingLeaks(t *testing.T) {
	netnstest.RequireRoot(t)
	before := bpfFDs(t)

	p, err := Load(Options{Mode: AttachTPBTF})
	require.NoError(t, err)
	assert.NotEqual(t, before, bpfFDs(t), "a loaded probe holds BPF objects")
	_, err = p.Walk(func(*Record) {})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	assert.Equal(t, before, bpfFDs(t), "after Close")

	_, err = Load(Options{Mode: AttachRawTP, tracepoint: "no_such_tracepoint"})
	require.ErrorContains(t, err, "attach raw_tp no_such_tracepoint")
	assert.Equal(t, before, bpfFDs(t), "after a failed attach")

	_, err = Load(Options{Mode: "kprobe"})
	require.ErrorContains(t, err, `unknown attach mode "kprobe"`)
	assert.Equal(t, before, bpfFDs(t), "after a bad mode")

	_, err = Load(Options{RingBufferBytes: 1000})
	require.Error(t, err, "a ring buffer that is not a power of two is refused by the kernel")
	assert.Equal(t, before, bpfFDs(t), "after a failed load")
}

// TestSecondProbeRefused: with a node lock, a second probe fails to start,
// names the owner, and leaks nothing; once the first closes it starts.
func TestSecondProbeRefused(t *testing.T) {
	netnstest.RequireRoot(t)
	lock := filepath.Join(t.TempDir(), "lock")
	first, err := Load(Options{LockFile: lock})
	require.NoError(t, err)
	before := bpfFDs(t)
	_, err = Load(Options{LockFile: lock})
	require.ErrorContains(t, err, "another tcpconn probe is running on this node (pid "+strconv.Itoa(os.Getpid())+" holds "+lock+")")
	assert.Equal(t, before, bpfFDs(t), "the refused probe left nothing behind")
	require.NoError(t, first.Close())
	second, err := Load(Options{LockFile: lock})
	require.NoError(t, err)
	require.NoError(t, second.Close())
}

// TestBackupProgramIsOptional: the backup program is one more link on the
// tracepoint; NoBackup leaves it out.
func TestBackupProgramIsOptional(t *testing.T) {
	netnstest.RequireRoot(t)
	links := func() int { return bpfFDs(t)["anon_inode:bpf_link"] }
	before := links()
	withBackup, err := Load(Options{Mode: AttachTPBTF})
	require.NoError(t, err)
	with := links() - before
	require.NoError(t, withBackup.Close())
	without, err := Load(Options{Mode: AttachTPBTF, NoBackup: true})
	require.NoError(t, err)
	defer without.Close()
	assert.Equal(t, with-1, links()-before, "one link fewer without the backup")
	assert.Len(t, without.links, 4, "the probe alone on inet_sock_set_state, the tcp_send_reset program, and the tcp_retransmit_skb program with its own backup")
}
