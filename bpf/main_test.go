//go:build linux

package bpf

import (
	"os"
	"testing"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestMain lets BenchmarkWalk re-run this binary as a connection holder.
func TestMain(m *testing.M) {
	netnstest.ChildMain()
	os.Exit(m.Run())
}
