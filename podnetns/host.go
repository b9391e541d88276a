package podnetns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// hostPIDs are the processes whose network namespace is the node's own.
// PID 1 (init) on an ordinary node; but where PID 1 is a sandbox's
// process, its ns links may be unreadable even to root, while PID 2
// (kthreadd) is a kernel thread, and kernel threads always live in the
// initial namespaces. PID 1 comes first so that nodes where it answered
// before keep the same namespace.
var hostPIDs = []string{"1", "2"}

// HostNetNS returns the path of the node's own network namespace under a
// proc mount: the first of <proc>/1/ns/net and <proc>/2/ns/net that can be
// opened. It needs the host's PID namespace (hostPID in a pod): in a PID
// namespace of its own, PIDs 1 and 2 are the container's.
func HostNetNS(proc string) (string, error) {
	var errs []error
	for _, pid := range hostPIDs {
		path := filepath.Join(proc, pid, "ns", "net")
		// Open, not stat: the link of a process one may not trace is
		// refused either way, and opening is what the users of the
		// path (setns, a netlink socket in it) will do.
		f, err := os.Open(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_ = f.Close()
		return path, nil
	}
	return "", fmt.Errorf("find the host's network namespace (needs the host's PID namespace): %w", errors.Join(errs...))
}
