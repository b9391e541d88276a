package netnstest

import (
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHeavyTakesTurns: the turn is held for the test's life (any test
// process that asks meanwhile waits), and given back at its end.
func TestHeavyTakesTurns(t *testing.T) {
	for range 2 {
		t.Run("turn", func(t *testing.T) {
			Heavy(t)
			_, err := net.Listen("unix", heavyLock)
			require.ErrorIs(t, err, syscall.EADDRINUSE, "held for the test")
		})
	}
}
