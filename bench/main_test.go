package bench

import (
	"os"
	"testing"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestMain lets the benchmarks re-run this binary as their storm or as a
// connection holder.
func TestMain(m *testing.M) {
	stormMain()
	netnstest.ChildMain()
	os.Exit(m.Run())
}
