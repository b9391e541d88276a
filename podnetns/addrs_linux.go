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
// IPVS device. It enters the namespace on an OS thread of its own, which
// is discarded afterwards: it needs CAP_SYS_ADMIN, and the right to open
// the path (CAP_SYS_PTRACE for another process's /proc/<pid>/ns/net).
func InterfaceAddrs(netnsPath string) ([]netip.Addr, error) {
	type result struct {
		addrs []netip.Addr
		err   error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: fmt.Errorf("open network namespace %s: %w", netnsPath, err)}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		_ = unix.Close(fd)
		if err != nil {
			done <- result{err: fmt.Errorf("enter network namespace %s: %w", netnsPath, err)}
			return
		}
		addrs, err := ownAddrs()
		if err != nil {
			err = fmt.Errorf("interface addresses in %s: %w", netnsPath, err)
		}
		done <- result{addrs, err}
	}()
	r := <-done
	return r.addrs, r.err
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
