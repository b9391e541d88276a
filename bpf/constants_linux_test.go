package bpf

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestStatesMatchRunningKernel ties the State constants to the running
// kernel's TCP states, from its BTF, which the probe needs anyway.
func TestStatesMatchRunningKernel(t *testing.T) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		netnstest.Unavailable(t, fmt.Sprintf("kernel BTF: %v", err))
	}
	checkStates(t, kernelTCPStates(t, spec))
}
