package podnetns

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"
)

// ipvsDevice is the dummy interface on which kube-proxy's IPVS mode binds
// every Service address (ClusterIPs, external and load-balancer IPs), so
// that the node accepts them: they are the Services', not the node's.
const ipvsDevice = "kube-ipvs0"

// InterfaceAddrs lists the addresses of the interfaces of the network
// namespace at netnsPath (e.g. HostNetNS's), but those of kube-proxy's
// IPVS device. It needs CAP_SYS_ADMIN (setns), and the right to open the
// path (CAP_SYS_PTRACE for another process's /proc/<pid>/ns/net).
func InterfaceAddrs(netnsPath string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	err := inNetNS(netnsPath, func() (err error) {
		addrs, err = ownAddrs()
		return err
	})
	return addrs, err
}

// inNetNS runs fn on an OS thread switched into the namespace at path,
// then switches the thread back before handing it to other goroutines.
// Letting the thread die with a locked goroutine instead would not do:
// the process's main thread cannot die, and the runtime parks it for good
// in the namespace, where /proc/self/ns/net (the main thread's) would
// then point. Only if the way back fails is the thread left locked, so
// that it is discarded.
func inNetNS(path string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer unix.Close(own)
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		_ = unix.Close(fd)
		if err != nil {
			runtime.UnlockOSThread() // setns failed: the thread is where it was
			done <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		err = fn()
		if err != nil {
			err = fmt.Errorf("in network namespace %s: %w", path, err)
		}
		if unix.Setns(own, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// ownAddrs lists the addresses of the calling thread's namespace: one
// netlink dump of them all (and one of the IPVS device's, where it is).
func ownAddrs() ([]netip.Addr, error) {
	all, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var services []net.Addr
	if ipvs, err := net.InterfaceByName(ipvsDevice); err == nil {
		if services, err = ipvs.Addrs(); err != nil {
			return nil, fmt.Errorf("%s: %w", ipvsDevice, err)
		}
	}
	out := make([]netip.Addr, 0, len(all))
	for _, a := range all {
		ip := addrOf(a)
		if !ip.IsValid() || slices.ContainsFunc(services, func(s net.Addr) bool { return addrOf(s) == ip }) {
			continue
		}
		out = append(out, ip)
	}
	return out, nil
}

func addrOf(a net.Addr) netip.Addr {
	n, ok := a.(*net.IPNet)
	if !ok {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(n.IP)
	return ip.Unmap()
}
