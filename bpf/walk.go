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

// ErrNotSupported is returned by Walk and Adopt when the probe runs in a
// mode without BPF iterators.
var ErrNotSupported = errors.New("not supported")

func (p *Probe) attachIterators() error {
	report, err := link.AttachIter(link.IterOptions{Program: p.coll.Programs["tcpconn_report"], Map: p.coll.Maps["sk_state"]})
	if err != nil {
		return fmt.Errorf("attach iter/bpf_sk_storage_map: %w", err)
	}
	adopt, err := link.AttachIter(link.IterOptions{Program: p.coll.Programs["tcpconn_adopt"]})
	if err != nil {
		report.Close()
		return fmt.Errorf("attach iter/tcp: %w", err)
	}
	p.report, p.adopt = report, adopt
	p.walkBuf = make([]byte, 0, 256*rawEventSize)
	return nil
}

// CanWalk reports why Walk and Adopt cannot run, or nil when they can.
func (p *Probe) CanWalk() error { return p.iterErr }

// Walk reads the live counters of every tracked connection in one pass
// over the per-socket storage, idle connections included, and calls visit
// with an update record for each. The record is reused between calls. Walk
// is for the goroutine that calls Read: records it reads after Walk
// returns were produced after the walk saw their connection, or for
// connections it skipped, so updates and closes stay in order.
func (p *Probe) Walk(visit func(*Record)) (int, error) {
	if p.iterErr != nil {
		return 0, p.iterErr
	}
	rd, err := p.report.Open()
	if err != nil {
		return 0, fmt.Errorf("open report iterator: %w", err)
	}
	defer rd.Close()
	n := 0
	buf := p.walkBuf[:cap(p.walkBuf)]
	have := 0
	for {
		m, err := rd.Read(buf[have:])
		have += m
		off := 0
		for have-off >= rawEventSize {
			if p.dec.decode(buf[off:off+rawEventSize], &p.walkRec) {
				visit(&p.walkRec)
				n++
			}
			off += rawEventSize
		}
		have = copy(buf, buf[off:have])
		if errors.Is(err, io.EOF) || (m == 0 && err == nil) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read report iterator: %w", err)
		}
	}
}

// Adopt gives per-socket state to the established TCP connections of every
// network namespace on the host that the probe has not seen open: Walk
// reports them from then on, flagged FlagAdopted. It returns how many it
// adopted. Namespaces are found through /proc/*/ns/net and /run/netns.
func (p *Probe) Adopt() (int, error) {
	if p.iterErr != nil {
		return 0, p.iterErr
	}
	total := 0
	var errs []error
	for _, path := range netnsPaths() {
		n, err := p.adoptIn(path)
		total += n
		if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// adoptIn runs the adoption iterator inside one network namespace, on an
// OS thread that is discarded afterwards.
func (p *Probe) adoptIn(nsPath string) (int, error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("enter %s: %w", nsPath, err)}
			return
		}
		rd, err := p.adopt.Open()
		if err != nil {
			done <- result{err: fmt.Errorf("open adoption iterator in %s: %w", nsPath, err)}
			return
		}
		defer rd.Close()
		b, err := io.ReadAll(rd)
		done <- result{n: len(b) / 4, err: err}
	}()
	r := <-done
	return r.n, r.err
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
