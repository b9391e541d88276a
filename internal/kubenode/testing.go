package kubenode

import (
	"os"
	"testing"
	"time"

	"github.com/tcpconn/tcpconn/internal/kubetest"
	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// Start brings a node up for a test, with kube-proxy in mode and the test
// workloads' images plus images imported, and takes it down when the test
// ends. A missing prerequisite skips, or fails on CI.
func Start(tb testing.TB, mode string, images ...string) *Node {
	tb.Helper()
	netnstest.RequireRoot(tb)
	if m := Missing(kubetest.BinDir()); len(m) > 0 {
		netnstest.Unavailable(tb, (&MissingError{What: m}).Error())
	}
	for _, img := range images {
		if _, err := os.Stat(img); err != nil {
			netnstest.Unavailable(tb, "image "+img+" (make image)")
		}
	}
	start := time.Now()
	n, err := UpWithTestImages(tb.TempDir(), mode, images...)
	if err != nil {
		tb.Fatalf("node up: %v", err)
	}
	tb.Logf("node up with kube-proxy in %s mode in %v", mode, time.Since(start).Round(time.Millisecond))
	tb.Cleanup(func() {
		if err := Down(n.Dir); err != nil {
			tb.Errorf("node down: %v", err)
		}
	})
	return n
}
