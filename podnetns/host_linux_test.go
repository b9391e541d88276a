package podnetns

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestHostNetNSIsTheInitialNamespace: run in the host's network namespace
// (as the tests are), the namespace HostNetNS finds in the real /proc is
// the test's own, also where PID 1's cannot be read (a sandbox); a
// scanner made by NewScanner names it the host's.
func TestHostNetNSIsTheInitialNamespace(t *testing.T) {
	netnstest.RequireRoot(t) // another process's ns link needs the right to trace it
	// This thread's, not /proc/self's (the main thread's): a test helper
	// whose locked goroutine ended in another namespace on the main thread
	// leaves it parked there.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	own := nsInode("/proc/thread-self/ns/net")
	require.NotZero(t, own)
	path, err := HostNetNS("/proc")
	require.NoError(t, err)
	assert.Equal(t, own, nsInode(path), "%s is not the initial network namespace", path)

	s := NewScanner()
	_, err = s.Scan()
	require.NoError(t, err)
	o, ok := s.Owner(own)
	assert.True(t, ok && o.Host, "the node's own namespace is not the host's (HostNetNS %q)", s.HostNetNS)
}
