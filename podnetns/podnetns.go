// Package podnetns tells which pod each network namespace belongs to, from
// /proc: every process's network namespace (/proc/<pid>/ns/net, its inode)
// and its cgroup (/proc/<pid>/cgroup, which names the pod's UID under
// kubepods). It lets the local end of a connection be resolved by the
// socket's network namespace, which the probe reports, instead of by an IP
// that may have passed to another pod. It knows nothing of eBPF, pdata or
// the Kubernetes API.
package podnetns

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// CgroupReader returns the contents of a process's /proc/<pid>/cgroup.
type CgroupReader interface {
	Cgroup(pid int) ([]byte, error)
}

// ProcCgroups reads /proc/<pid>/cgroup under a proc mount.
type ProcCgroups struct{ Proc string }

// Cgroup reads the process's cgroup file.
func (p ProcCgroups) Cgroup(pid int) ([]byte, error) {
	return os.ReadFile(filepath.Join(p.Proc, strconv.Itoa(pid), "cgroup"))
}

// Owner is who a network namespace belongs to.
type Owner struct {
	// PodUID is the pod whose processes run in the namespace.
	PodUID string
	// Host: the node's own namespace (the initial one, see HostNetNS),
	// which the node's processes and host-network pods share.
	Host bool
	// pid is the process the scan found the pod by: while it lives in the
	// namespace, the namespace is still that pod's (see Scanner.Resolve).
	pid int
}

// Map is one scan's answer: network namespace inode -> owner. Namespaces
// with no process of a pod (named namespaces, a process outside kubepods)
// are absent.
type Map struct {
	owners map[uint64]Owner
	host   uint64
	// unknown: namespaces Resolve scanned for in vain since the last
	// periodic Scan.
	unknown map[uint64]bool
}

// Owner returns the owner of the namespace with inode ino.
func (m *Map) Owner(ino uint64) (Owner, bool) {
	if m == nil || ino == 0 {
		return Owner{}, false
	}
	if ino == m.host {
		return Owner{Host: true}, true
	}
	o, ok := m.owners[ino]
	return o, ok
}

// Len is how many namespaces belong to pods.
func (m *Map) Len() int {
	if m == nil {
		return 0
	}
	return len(m.owners)
}

// Scanner scans /proc and keeps the latest Map for lock-free lookups.
type Scanner struct {
	// Proc is the proc mount ("/proc"; with hostPID in a pod, the host's).
	Proc    string
	Cgroups CgroupReader
	// HostNetNS is a path to the node's own network namespace (see
	// HostNetNS); when it is empty or cannot be read, no namespace is the
	// host's.
	HostNetNS  string
	latest     atomic.Pointer[Map]
	lastRescan time.Time
}

// NewScanner returns a scanner of /proc. The host's namespace is found
// once, here (HostNetNS): PIDs 1 and 2 keep theirs for the node's life.
// Where neither can be read, no namespace is the host's: the node's
// processes are then resolved by address.
func NewScanner() *Scanner {
	host, _ := HostNetNS("/proc")
	return &Scanner{Proc: "/proc", Cgroups: ProcCgroups{Proc: "/proc"}, HostNetNS: host}
}

// Owner looks ino up in the latest scan.
func (s *Scanner) Owner(ino uint64) (Owner, bool) { return s.latest.Load().Owner(ino) }

// rescanEvery bounds the scans Resolve starts: at most one per interval,
// however many unknown namespaces a burst of connections brings.
const rescanEvery = 250 * time.Millisecond

// Resolve looks ino up like Owner, but scans /proc again first (at most
// every rescanEvery) when the latest scan cannot be trusted for it: the
// namespace is unknown (a pod started since, whose first connections come
// before the next periodic scan), or the process that named it no longer
// lives there (the kernel gave a dead pod's namespace inode to a new one).
// A namespace still unknown after a scan is not scanned for again until
// the next periodic Scan. Called from one goroutine at a time.
func (s *Scanner) Resolve(ino uint64, now time.Time) (Owner, bool) {
	m := s.latest.Load()
	o, ok := m.Owner(ino)
	if ok && (o.Host || s.stillIn(o.pid, ino)) {
		return o, true
	}
	if ino == 0 || m == nil || m.unknown[ino] || now.Sub(s.lastRescan) < rescanEvery {
		if ok && !o.Host {
			return Owner{}, false // stale: better the address rule than another pod
		}
		return o, ok
	}
	s.lastRescan = now
	fresh, err := s.scan()
	if err != nil {
		return Owner{}, false
	}
	if o, ok = fresh.Owner(ino); !ok {
		fresh.unknown = m.unknown
		if fresh.unknown == nil {
			fresh.unknown = map[uint64]bool{}
		}
		fresh.unknown[ino] = true
	}
	s.latest.Store(fresh)
	return o, ok
}

// stillIn says whether pid still runs in the namespace with inode ino.
func (s *Scanner) stillIn(pid int, ino uint64) bool {
	return pid > 0 && nsInode(filepath.Join(s.Proc, strconv.Itoa(pid), "ns", "net")) == ino
}

// Scan walks /proc once and publishes what it found. A namespace goes to
// the first pod found among its processes: each process's cgroup is read
// only while its namespace has no pod yet, so a scan reads one cgroup file
// per pod namespace (plus the processes outside pods).
func (s *Scanner) Scan() (*Map, error) {
	m, err := s.scan()
	if err != nil {
		return nil, err
	}
	s.latest.Store(m)
	return m, nil
}

func (s *Scanner) scan() (*Map, error) {
	m := &Map{owners: map[uint64]Owner{}, host: nsInode(s.HostNetNS)}
	dirs, err := os.ReadDir(s.Proc)
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || !d.IsDir() {
			continue
		}
		ino := nsInode(filepath.Join(s.Proc, d.Name(), "ns", "net"))
		if ino == 0 || ino == m.host {
			continue
		}
		if _, done := m.owners[ino]; done {
			continue
		}
		b, err := s.Cgroups.Cgroup(pid)
		if err != nil {
			continue // the process is gone
		}
		if uid := PodUID(b); uid != "" {
			m.owners[ino] = Owner{PodUID: uid, pid: pid}
		}
	}
	return m, nil
}

func nsInode(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// PodUID finds the pod UID in the contents of a /proc/<pid>/cgroup file:
// the kubelet puts each pod's containers under a cgroup named after the
// pod's UID below kubepods, with either cgroup driver and either cgroup
// version:
//
//	cgroupfs: /kubepods/burstable/pod<uid>/<container>
//	systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, '_' for '-'>.slice/cri-containerd-<id>.scope
//
// It returns "" when no line names one.
func PodUID(cgroup []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cgroup))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 || !strings.Contains(f[2], "kubepods") {
			continue
		}
		for _, seg := range strings.Split(f[2], "/") {
			if uid := uidIn(seg); uid != "" {
				return uid
			}
		}
	}
	return ""
}

// uidIn returns the UID of a path segment "pod<uid>" or
// "kubepods[-class]-pod<uid>.slice".
func uidIn(seg string) string {
	seg = strings.TrimSuffix(seg, ".slice")
	i := strings.LastIndex(seg, "pod")
	if i < 0 || (i > 0 && seg[i-1] != '-') {
		return ""
	}
	uid := strings.ReplaceAll(seg[i+3:], "_", "-")
	if !isUID(uid) {
		return ""
	}
	return uid
}

// isUID: 8-4-4-4-12 hex digits.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
