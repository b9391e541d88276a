package podnetns

import (
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestInterfaceAddrs: the addresses of a namespace's interfaces, read from
// inside it (a bridge's gateway address, loopback), but not those of
// kube-proxy's IPVS device (Service addresses); no thread of the process,
// the main one included, stays in the namespace.
func TestInterfaceAddrs(t *testing.T) {
	ns := netnstest.NewNS(t, "tcpn"+strconv.Itoa(os.Getpid()%100000)+"i")
	ns.Exec(t, "ip", "link", "add", "br0", "type", "bridge")
	ns.Exec(t, "ip", "addr", "add", "10.212.1.1/24", "dev", "br0")
	ns.Exec(t, "ip", "link", "add", "kube-ipvs0", "type", "bridge") // kube-proxy makes a dummy; this kernel may have no dummy driver
	ns.Exec(t, "ip", "addr", "add", "10.212.2.10/32", "dev", "kube-ipvs0")
	ns.Exec(t, "ip", "addr", "add", "10.212.2.11/32", "dev", "lo") // a node IP on loopback, as some nodes have
	inside, err := ns.Inode()
	require.NoError(t, err)

	for range 20 { // on whichever threads the runtime gives
		got, err := InterfaceAddrs("/run/netns/" + ns.Name)
		require.NoError(t, err)
		for _, want := range []string{"10.212.1.1", "10.212.2.11", "127.0.0.1"} {
			assert.Contains(t, got, netip.MustParseAddr(want))
		}
		assert.NotContains(t, got, netip.MustParseAddr("10.212.2.10"), "a Service address on kube-ipvs0")
	}
	tasks, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	for _, task := range tasks {
		assert.NotEqual(t, inside, nsInode("/proc/self/task/"+task.Name()+"/ns/net"), "thread %s stayed in the namespace", task.Name())
	}
	assert.NotEqual(t, inside, nsInode("/proc/self/ns/net"), "the main thread stayed in the namespace")

	_, err = InterfaceAddrs("/run/netns/tcpn-none")
	assert.ErrorContains(t, err, "open network namespace /run/netns/tcpn-none")
}
