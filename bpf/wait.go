//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ringWait waits for the ring buffer through the Go runtime's network
// poller. The ring buffer reader's own wait is a blocking epoll_wait: the
// runtime counts its goroutine as in a system call, so its monitor thread
// (sysmon) polled every 20 us to 10 ms for each wait before it could
// sleep, the largest item of an idle collector's CPU. A goroutine parked
// in the poller leaves the runtime idle between timers.
type ringWait struct {
	f  *os.File
	rc syscall.RawConn
	// done is the poller's test, made once (a closure per wait would be
	// an allocation per wait): before waiting, whether the probe stopped;
	// after, true (the descriptor was ready, or the wait was woken).
	// It never reads the ring buffer: Close may be freeing it meanwhile.
	done   func(uintptr) bool
	waited bool
}

// newRingWait registers a duplicate of the ring buffer's descriptor with
// the poller; stopped says whether a wait need not start.
func newRingWait(events *ebpf.Map, stopped func() bool) (*ringWait, error) {
	fd, err := unix.FcntlInt(uintptr(events.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate the ring buffer's descriptor: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("make the ring buffer's descriptor non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tcpconn ring buffer")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer descriptor: %w", err)
	}
	w := &ringWait{f: f, rc: rc}
	w.done = func(uintptr) bool {
		if w.waited {
			return true
		}
		w.waited = true
		return stopped()
	}
	// A descriptor the poller did not take has no deadlines.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("poll the ring buffer: %w", err)
	}
	return w, nil
}

// wait returns true when the ring buffer's descriptor is ready (the kernel
// woke its readers: records past wakeup_bytes), the probe stopped, or wake
// was called; false at the deadline. The caller looks at the ring buffer
// again: a ready descriptor may find it already read.
func (w *ringWait) wait(deadline time.Time) (bool, error) {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return false, err
	}
	w.waited = false
	err := w.rc.Read(w.done)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	return err == nil, err
}

// wake ends a wait now, from any goroutine: wait returns false, or true
// if it had not started waiting.
func (w *ringWait) wake() error { return w.f.SetReadDeadline(time.Unix(1, 0)) }

func (w *ringWait) close() error { return w.f.Close() }
