package bpf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrNotSupported is returned by Walk when the probe runs in a
// mode without BPF iterators.
var ErrNotSupported = errors.New("not supported")

func (p *Probe) attachIterators() error {
	report, err := link.AttachIter(link.IterOptions{Program: p.coll.Programs["tcpconn_report"]})
	if err != nil {
		return fmt.Errorf("attach iter/tcp (report): %w", err)
	}
	p.report = report
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
// record was dropped). Walk is for the goroutine that calls Read: a close
// record Read returns after Walk was produced after the walk saw its
// connection (a closed socket is not visited), so an update never follows
// its connection's close; an open record still queued in the ring buffer
// may follow its connection's first update.
func (p *Probe) Walk(visit func(*Record)) (int, error) {
	if p.iterErr != nil {
		return 0, p.iterErr
	}
	n := 0
	err := inEachNetns(func(ns string) error {
		buf, err := readAll(p.report, p.walkBuf[:0])
		p.walkBuf = buf
		for off := 0; off+rawEventSize <= len(buf); off += rawEventSize {
			if p.dec.decode(buf[off:off+rawEventSize], &p.walkRec) {
				visit(&p.walkRec)
				n++
			}
		}
		if err != nil {
			return fmt.Errorf("report walk in %s: %w", ns, err)
		}
		return nil
	})
	return n, err
}

// readAll runs an iterator in the calling thread's network namespace and
// appends its output to buf.
func readAll(it *link.Iter, buf []byte) ([]byte, error) {
	rd, err := it.Open()
	if err != nil {
		return buf, err
	}
	defer rd.Close()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, max(64<<10, cap(buf)))...)[:len(buf)]
		}
		m, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if errors.Is(err, io.EOF) || (m == 0 && err == nil) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// inEachNetns calls fn once inside every network namespace on the host
// (found through /proc/*/ns/net and /run/netns), on one OS thread that is
// discarded afterwards. A namespace that vanishes meanwhile is skipped.
func inEachNetns(fn func(ns string) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		var errs []error
		for _, path := range netnsPaths() {
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

// netnsPaths lists one path per distinct network namespace.
func netnsPaths() []string {
	seen := map[uint64]bool{}
	var out []string
	add := func(path string) {
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil || seen[st.Ino] {
			return
		}
		seen[st.Ino] = true
		out = append(out, path)
	}
	add("/proc/self/ns/net")
	if named, err := filepath.Glob("/run/netns/*"); err == nil {
		for _, n := range named {
			add(n)
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, d := range procs {
		if d.IsDir() && strings.Trim(d.Name(), "0123456789") == "" {
			add(filepath.Join("/proc", d.Name(), "ns", "net"))
		}
	}
	return out
}
