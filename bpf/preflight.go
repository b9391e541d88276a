//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// KernelBTFPath is where the kernel publishes its BTF; the probe's CO-RE
// relocations and tp_btf attachment need it.
const KernelBTFPath = "/sys/kernel/btf/vmlinux"

// Capabilities the probe needs when not running with CAP_SYS_ADMIN.
const (
	capBPF     = 39
	capPerfmon = 38
)

// Preflight reports, in one error, everything this host lacks to run the
// probe: kernel BTF, and CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN).
func Preflight() error { return preflight(KernelBTFPath) }

func preflight(btfPath string) error {
	var missing []string
	if _, err := os.Stat(btfPath); err != nil {
		missing = append(missing, fmt.Sprintf("kernel BTF (%v; the kernel needs CONFIG_DEBUG_INFO_BTF=y)", err))
	}
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("read process capabilities: %w", err)
	}
	if !has(caps, unix.CAP_SYS_ADMIN) {
		var lack []string
		if !has(caps, capBPF) {
			lack = append(lack, "CAP_BPF")
		}
		if !has(caps, capPerfmon) {
			lack = append(lack, "CAP_PERFMON")
		}
		if len(lack) > 0 {
			missing = append(missing, fmt.Sprintf("capabilities %s (run as root, or grant them, or CAP_SYS_ADMIN)", strings.Join(lack, ", ")))
		}
	}
	if len(missing) > 0 {
		return errors.New("cannot load the tcpconn probe: missing " + strings.Join(missing, "; "))
	}
	return nil
}

func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

func has(caps uint64, c int) bool { return caps&(1<<uint(c)) != 0 }
