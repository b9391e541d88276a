//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func (p *Probe) attachIterators() error {
	report, err := link.AttachIter(link.IterOptions{Program: p.objs.report})
	if err != nil {
		return fmt.Errorf("attach iter/tcp (report): %w", err)
	}
	p.report = report
	if p.objs.reportTracked != nil {
		tracked, err := link.AttachIter(link.IterOptions{Program: p.objs.reportTracked, Map: p.objs.TrackedChunks})
		if err != nil {
			return fmt.Errorf("attach iter/bpf_map_elem (tracked report): %w", err)
		}
		p.reportTracked = tracked
	}
	return nil
}

// CanWalk reports why Walk cannot run, or nil when it can.
func (p *Probe) CanWalk() error { return p.iterErr }

// Walk reads the live counters of every established TCP connection, idle
// ones included, in every network namespace on the host, and calls visit
// with an update record for each. The record is reused between calls.
// Update records carry the connection's id, addresses and counters but not
// its start, direction or process: those came with its open record, or
// the probe never saw it open (it opened before the probe, or its open
// record was dropped).
//
// Walk reads the probe's table of established sockets, all namespaces at
// once (see tcpconn_report_tracked), and each namespace's listeners
// through sock_diag. It runs iter/tcp in each namespace instead at the
// first walk (connections open before the probe), on kernels before 6.4
// (no bpf_rdonly_cast or open-coded iterators), and after the table had
// no room for a socket (Stats.Untracked grew); that walk tracks what it
// finds where there is room.
//
// A connection's update is produced before its close record. Read may run
// on another goroutine meanwhile (see Probe): a reader that takes the
// walk's records as they come, between Reads, may read a close before the
// update the walk made of that connection just before it closed, and must
// drop that update. An open record still queued in the ring buffer may
// follow its connection's first update.
func (p *Probe) Walk(visit func(*Record)) (int, error) { return p.walk(visit, false) }

// WalkStart is the start-up walk: Walk, and the update records of
// connections the probe never saw open get the direction their namespace
// tells (Listeners.Direction: inbound on a listening port, outbound on an
// ephemeral port nothing listens on), from the namespace's
// /proc/thread-self/net/tcp{,6} read as the walk visits it. Later walks
// leave that out: the receiver keeps what the first record of each
// connection said.
func (p *Probe) WalkStart(visit func(*Record)) (int, error) { return p.walk(visit, true) }

func (p *Probe) walk(visit func(*Record), directions bool) (int, error) {
	if p.iterErr != nil {
		return 0, p.iterErr
	}
	if p.walkBuf == nil {
		p.walkBuf = make([]byte, walkBufRecords*rawEventSize)
		p.diagBuf = make([]byte, diagBuf)
	}
	perNetns := directions || !p.canWalkTracked()
	p.walkedNetns, p.lastPerNetns = p.walkedNetns || perNetns, perNetns
	n := 0
	p.listen, p.listenErr, p.backlogs, p.walkSkipped = p.listen[:0], nil, p.backlogs[:0], p.walkSkipped[:0]
	err := inEachNetns(&p.netns, func(ns string) error {
		ls, err := readListenStats()
		if err != nil {
			p.listenErr = errors.Join(p.listenErr, fmt.Errorf("%s: %w", ns, err))
		} else {
			p.listen = append(p.listen, ls)
		}
		if err := readBacklogs(p.diagBuf, func(local netip.Addr, port uint16, queued, limit uint32) {
			p.addBacklog(Backlog{NetNS: ls.NetNS, Local: local, Port: port, Queued: queued, Limit: limit}, ls.Local)
		}); err != nil {
			p.listenErr = errors.Join(p.listenErr, fmt.Errorf("%s: %w", ns, err))
		}
		if !perNetns {
			return nil
		}
		if inUse, err := tcpInUse(); err == nil && inUse == 0 {
			// No TCP socket, listening or not: nothing to report, where
			// the iterator would still scan every socket of every
			// namespace (the kernel's socket hash is the host's, and
			// iter/tcp filters it by namespace), the walk's main cost on
			// a host of many namespaces.
			p.walkSkipped = append(p.walkSkipped, ls.NetNS)
			return nil
		}
		var l *Listeners
		if directions {
			// Without them the namespace's adopted connections stay
			// of unknown direction; the walk goes on.
			l, _ = readListeners()
		}
		m, err := p.readIter(p.report, visit, l)
		n += m
		if err != nil {
			return fmt.Errorf("report walk in %s: %w", ns, err)
		}
		return nil
	})
	if !perNetns {
		m, terr := p.readIter(p.reportTracked, visit, nil)
		n += m
		if terr != nil {
			err = errors.Join(err, fmt.Errorf("report walk of the tracked table: %w", terr))
		}
	}
	return n, err
}

// canWalkTracked says whether the tracked table holds every established
// socket: the kernel can walk it, and it has not lacked room for a socket
// since the last walk of the namespaces (which tracks what it visits), and
// such a walk ran: the first finds the connections open before the probe.
func (p *Probe) canWalkTracked() bool {
	if p.reportTracked == nil {
		return false
	}
	untracked, err := p.stat(statUntracked)
	if err != nil || untracked != p.untracked || !p.walkedNetns {
		// Counted from now: sockets the next walk of the namespaces cannot
		// track either make it walk them again.
		p.untracked = untracked
		return false
	}
	return true
}

// walkBufRecords sizes the walk's read buffer: the walk streams through
// it, so its memory does not grow with the number of connections.
const walkBufRecords = 512

// readIter runs an iterator of update records (report, in the calling
// thread's network namespace, or reportTracked) and visits them as they
// are read; with l, records without a direction get the one l tells.
func (p *Probe) readIter(it *link.Iter, visit func(*Record), l *Listeners) (int, error) {
	rd, err := it.Open()
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	buf, pending, n := p.walkBuf, 0, 0
	for {
		m, err := rd.Read(buf[pending:])
		pending += m
		off := 0
		for ; off+rawEventSize <= pending; off += rawEventSize {
			if p.dec.decode(buf[off:off+rawEventSize], &p.walkRec) {
				if l != nil && p.walkRec.Direction == DirectionUnknown {
					p.walkRec.SetDirection(l.Direction(p.walkRec.LocalAddr, p.walkRec.LocalPort))
				}
				visit(&p.walkRec)
				n++
			}
		}
		pending = copy(buf, buf[off:pending]) // a record split between reads
		if errors.Is(err, io.EOF) || (m == 0 && err == nil) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// addBacklog keeps a listening socket's accept queue for Backlogs; one
// listening on any address is named by nsAddr, its namespace's address.
func (p *Probe) addBacklog(b Backlog, nsAddr netip.Addr) {
	if b.Local.IsUnspecified() && nsAddr.IsValid() {
		b.Local = nsAddr
	}
	p.backlogs = append(p.backlogs, b)
}

// Backlogs calls fn with each listening socket's accept queue as the last
// walk saw it (none before the first).
func (p *Probe) Backlogs(fn func(Backlog)) {
	for _, b := range p.backlogs {
		fn(b)
	}
}

// Listen calls fn with each network namespace's listener health counters
// as the last walk read them (Walk or WalkStart: none before the first),
// and returns what failed to read.
func (p *Probe) Listen(fn func(ListenStats)) error {
	for _, ls := range p.listen {
		fn(ls)
	}
	return p.listenErr
}

// readListenStats reads the calling thread's network namespace: its
// inode, an address that names it, and its TcpExt listener counters.
func readListenStats() (ListenStats, error) {
	var ls ListenStats
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return ls, err
	}
	ls.NetNS = uint32(st.Ino)
	f, err := os.Open("/proc/thread-self/net/netstat")
	if err != nil {
		return ls, err
	}
	defer f.Close()
	if err := parseNetstat(f, &ls); err != nil {
		return ls, err
	}
	// Interface addresses through netlink, from this thread: its namespace.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if !ip.IsGlobalUnicast() {
				continue
			}
			if !ls.Local.IsValid() || (ip.Is4() && !ls.Local.Is4()) {
				ls.Local = ip
			}
		}
	}
	return ls, nil
}

// tcpInUse counts the calling thread's network namespace's TCP sockets
// in use, IPv4 and IPv6: listening, connected or closing (time-wait ones
// are not, nor are they reported).
func tcpInUse() (int, error) {
	n := 0
	for _, t := range []struct{ path, prefix string }{{"/proc/thread-self/net/sockstat", "TCP:"}, {"/proc/thread-self/net/sockstat6", "TCP6:"}} {
		b, err := os.ReadFile(t.path)
		if errors.Is(err, os.ErrNotExist) && t.prefix == "TCP6:" {
			continue // no IPv6
		}
		if err != nil {
			return 0, err
		}
		m, err := parseSockstatTCP(string(b), t.prefix)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t.path, err)
		}
		n += m
	}
	return n, nil
}

// readListeners reads the listening sockets and the ephemeral port range
// of the calling thread's network namespace.
func readListeners() (*Listeners, error) {
	l := &Listeners{}
	for _, table := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		f, err := os.Open(table)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		err = l.Parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", table, err)
		}
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		_ = l.ParsePortRange(string(b)) // without it, listeners alone tell
	}
	return l, nil
}

// inEachNetns calls fn once inside every network namespace on the host
// (found by f, through /proc/*/ns/net and /run/netns), on one OS thread
// that is discarded afterwards. A namespace that vanishes meanwhile is
// skipped.
func inEachNetns(f *netnsFinder, fn func(ns string) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var errs []error
		for _, path := range f.list() {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				continue // the process or namespace is gone
			}
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
			if err != nil {
				errs = append(errs, fmt.Errorf("enter %s: %w", path, err))
				continue
			}
			if err := fn(path); err != nil {
				errs = append(errs, err)
			}
		}
		done <- errors.Join(errs...)
	}()
	return <-done
}

// netnsFinder lists one path per distinct network namespace, walk after
// walk. A stat of /proc/<pid>/ns/net costs about 8 us (procfs lookups), the
// largest item of an idle node's walk: it remembers each process's
// namespace and stats only processes it has not seen, and every process
// once every netnsFullScan walks, for one that changed its namespace
// after it was seen (a container's init joins its pod's namespace just
// after it starts; its pod's other processes are new).
type netnsFinder struct {
	byPid map[string]uint64
	walks int
	seen  map[uint64]bool
	paths []string
}

// netnsFullScan: every this many walks, every process's namespace is read
// again.
const netnsFullScan = 30

func (f *netnsFinder) list() []string {
	full := f.byPid == nil || f.walks%netnsFullScan == 0
	f.walks++
	if f.byPid == nil {
		f.byPid, f.seen = map[string]uint64{}, map[uint64]bool{}
	}
	clear(f.seen)
	f.paths = f.paths[:0]
	add := func(path string, ino uint64) {
		if !f.seen[ino] {
			f.seen[ino] = true
			f.paths = append(f.paths, path)
		}
	}
	stat := func(path string) (uint64, bool) {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			return 0, false
		}
		return st.Ino, true
	}
	if ino, ok := stat("/proc/self/ns/net"); ok {
		add("/proc/self/ns/net", ino)
	}
	if named, err := filepath.Glob("/run/netns/*"); err == nil {
		for _, n := range named {
			if ino, ok := stat(n); ok {
				add(n, ino)
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	live := make(map[string]bool, len(procs))
	for _, d := range procs {
		pid := d.Name()
		if !d.IsDir() || strings.Trim(pid, "0123456789") != "" {
			continue
		}
		live[pid] = true
		ino, known := f.byPid[pid]
		if full || !known {
			var ok bool
			if ino, ok = stat("/proc/" + pid + "/ns/net"); !ok {
				delete(f.byPid, pid) // exited, or a kernel thread's namespace we may not read
				continue
			}
			f.byPid[pid] = ino
		}
		if !f.seen[ino] {
			add("/proc/"+pid+"/ns/net", ino)
		}
	}
	for pid := range f.byPid {
		if !live[pid] {
			delete(f.byPid, pid) // exited: its pid may come back in another namespace
		}
	}
	return f.paths
}
