// Package netnstest builds throwaway network namespaces joined by veth pairs
// so kernel and pipeline tests can make real TCP connections between two
// "pods" on this machine. Everything it creates is removed in t.Cleanup.
package netnstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// counter makes names and subnets unique within one test process.
var counter atomic.Uint32

// RequireRoot skips the test when not root, except on CI (CI=true), where
// a missing prerequisite is a failure.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	Unavailable(tb, "needs root (network namespaces, eBPF)")
}

// Unavailable fails on CI and skips elsewhere, with the reason.
func Unavailable(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("prerequisite missing on CI: %s", reason)
	}
	tb.Skipf("prerequisite missing: %s", reason)
}

// NS is one network namespace.
type NS struct {
	Name string
	fd   int
}

// Pair is two namespaces, a client and a server, joined by one veth pair on
// a /24 of their own: the server is .1, the client .2.
type Pair struct {
	Client, Server     *NS
	ClientIP, ServerIP netip.Addr
	// BlackHole is an address on the link whose frames nobody receives:
	// a connect to it times out.
	BlackHole netip.Addr
	// ServerDev and ClientDev name the veth pair's ends, in the server's
	// and the client's namespace.
	ServerDev, ClientDev string
}

// NewPair creates a pair under 10.<octet>.<n>.0/24, where octet is the
// caller's package's own range and n counts pairs in this process.
func NewPair(tb testing.TB, octet byte) *Pair {
	tb.Helper()
	n := counter.Add(1)
	if n > 250 {
		tb.Fatalf("netnstest: more than 250 pairs in one process")
	}
	return newPair(tb, [3]byte{10, octet, byte(n)}, n)
}

// NewPairOn creates a pair on the /24 that prefix names (three octets),
// not the next one NewPair takes: for a test whose range another process
// uses with NewPair meanwhile (a benchmark run beside the tests), which
// starts at .1 and takes a /24 per pair.
func NewPairOn(tb testing.TB, prefix [3]byte) *Pair {
	tb.Helper()
	return newPair(tb, prefix, counter.Add(1))
}

func newPair(tb testing.TB, prefix [3]byte, n uint32) *Pair {
	tb.Helper()
	RequireRoot(tb)
	if _, err := exec.LookPath("ip"); err != nil {
		Unavailable(tb, "the ip command (iproute2)")
	}
	tag := fmt.Sprintf("%d%d", os.Getpid()%100000, n)
	host := func(h byte) netip.Addr { return netip.AddrFrom4([4]byte{prefix[0], prefix[1], prefix[2], h}) }
	p := &Pair{ClientIP: host(2), ServerIP: host(1), BlackHole: host(3)}
	p.Server = newNS(tb, "tcs"+tag)
	p.Client = newNS(tb, "tcc"+tag)
	vs, vc := "vs"+tag, "vc"+tag
	p.ServerDev, p.ClientDev = vs, vc
	run(tb, "ip", "link", "add", vs, "netns", p.Server.Name, "type", "veth", "peer", "name", vc, "netns", p.Client.Name)
	p.Server.Exec(tb, "ip", "addr", "add", p.ServerIP.String()+"/24", "dev", vs)
	p.Client.Exec(tb, "ip", "addr", "add", p.ClientIP.String()+"/24", "dev", vc)
	for _, ns := range []*NS{p.Server, p.Client} {
		ns.Exec(tb, "ip", "link", "set", "lo", "up")
	}
	p.Server.Exec(tb, "ip", "link", "set", vs, "up")
	p.Client.Exec(tb, "ip", "link", "set", vc, "up")
	// Frames to this MAC reach the server's veth and are dropped there.
	p.Client.Exec(tb, "ip", "neigh", "add", p.BlackHole.String(), "lladdr", "02:00:00:00:00:99", "dev", vc, "nud", "permanent")
	return p
}

// AddIPv6 gives the pair's veth ends IPv6 addresses in the range that
// mirrors its IPv4 one, fd00:<octet>:<n>::/64 for 10.<octet>.<n>.0/24
// (the octet's decimal digits read as hex: fd00:205::/32 for 10.205):
// ::1 the server, ::2 the client, usable at once (no duplicate address
// detection). It returns them.
func (p *Pair) AddIPv6(tb testing.TB) (server, client netip.Addr) {
	tb.Helper()
	a := p.ServerIP.As4()
	prefix := fmt.Sprintf("fd00:%d:%x::", a[1], a[2])
	server, client = netip.MustParseAddr(prefix+"1"), netip.MustParseAddr(prefix+"2")
	p.Server.Exec(tb, "ip", "-6", "addr", "add", server.String()+"/64", "dev", p.ServerDev, "nodad")
	p.Client.Exec(tb, "ip", "-6", "addr", "add", client.String()+"/64", "dev", p.ClientDev, "nodad")
	return server, client
}

func newNS(tb testing.TB, name string) *NS {
	tb.Helper()
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open netns %s: %v", name, err)
	}
	tb.Cleanup(func() { _ = unix.Close(fd) })
	return &NS{Name: name, fd: fd}
}

// Exec runs a command inside the namespace and fails the test on error.
func (ns *NS) Exec(tb testing.TB, args ...string) {
	tb.Helper()
	run(tb, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Nstat reads one of the namespace's absolute kernel counters with nstat
// (iproute2), e.g. TcpExtListenOverflows: the kernel's own count, read by
// a tool of its own, to check ours against.
func (ns *NS) Nstat(tb testing.TB, name string) int64 {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns.Name, "nstat", "-saz", name).CombinedOutput()
	if err != nil {
		tb.Fatalf("nstat %s: %v: %s", name, err, out)
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == name {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				tb.Fatalf("nstat %s: %v", name, err)
			}
			return v
		}
	}
	tb.Fatalf("nstat: no %s in %s", name, out)
	return 0
}

// Inode is the namespace's inode number, as the probe reports it.
func (ns *NS) Inode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(ns.fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Do runs fn on an OS thread switched into the namespace. Sockets that fn
// creates belong to the namespace for their whole life and may be used from
// any goroutine afterwards.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked and so discarded on exit: it is never
		// reused in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a TCP listener inside the namespace.
func (ns *NS) Listen(addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// Dial connects from inside the namespace.
func (ns *NS) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

func run(tb testing.TB, args ...string) {
	tb.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Attach opens an existing namespace by name, for a child process that
// works inside namespaces its parent created. The caller closes it.
func Attach(name string) (*NS, error) {
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	return &NS{Name: name, fd: fd}, nil
}

// Close releases a namespace opened with Attach.
func (ns *NS) Close() error { return unix.Close(ns.fd) }
