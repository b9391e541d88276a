//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestReadWakesPastWakeupBytes: Read waits in the runtime's poller, and
// the kernel's wakeup, once records pass wakeup_bytes, ends the wait at
// once, long before the poll interval (a minute here).
func TestReadWakesPastWakeupBytes(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF, PollInterval: time.Minute, RingBufferBytes: 64 << 10, WakeupBytes: 4 << 10})
	target := sink(t, pair, "7030")
	var rec Record
	readAllNow(p, &rec) // what the probe saw before
	// Four records a connection, ~200 bytes each: 20 connections are
	// about four times wakeup_bytes.
	done := make(chan error, 1)
	go func() { done <- openAndClose(pair, target, 20) }()
	start := time.Now()
	require.NoError(t, p.Read(&rec), "the first record, after a wakeup")
	require.Less(t, time.Since(start), 20*time.Second, "Read waited for its poll interval")
	require.NoError(t, <-done)
}

// TestReadWaitsInPoller: a Read waiting for its poll interval (a minute)
// waits in the runtime's poller, not in a thread blocked on the ring
// buffer reader's own epoll descriptor (which kept the runtime's monitor
// polling). Records that come meanwhile below wakeup_bytes wake nobody;
// Stop, from another goroutine, ends the wait at once, and Read still
// hands them out before ErrStopped.
func TestReadWaitsInPoller(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	target := sink(t, pair, "7031")
	p := loadProbe(t, Options{Mode: AttachTPBTF, PollInterval: time.Minute})
	var rec Record
	readAllNow(p, &rec)
	ours := 0
	done := readInBackground(p, &rec, func() {
		if rec.LocalAddr == pair.ClientIP || rec.LocalAddr == pair.ServerIP {
			ours++
		}
	})
	time.Sleep(200 * time.Millisecond) // let Read wait
	readerEpoll := epollWatching(t, p.objs.Events.FD())
	require.Positive(t, readerEpoll, "the ring buffer reader's epoll descriptor")
	require.Empty(t, threadsWaitingOn(t, readerEpoll), "a thread blocked in epoll_wait on the reader's descriptor")

	// An open and a close on each end of each connection: far below
	// wakeup_bytes (an eighth of the ring).
	const conns = 3
	require.NoError(t, openAndClose(pair, target, conns))
	time.Sleep(200 * time.Millisecond) // the servers' closes
	start := time.Now()
	require.NoError(t, p.Stop())
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrStopped)
		require.Less(t, time.Since(start), 5*time.Second)
		assert.Equal(t, 4*conns, ours, "the records that came while Read waited")
	case <-time.After(10 * time.Second):
		t.Fatal("Read still waits after Stop")
	}
}

// epollWatching is this process's epoll descriptor that watches fd, and
// only fd (the ring buffer reader's: the runtime's poller watches a
// duplicate, among others); 0 if none.
func epollWatching(t *testing.T, fd int) int {
	t.Helper()
	infos, err := filepath.Glob("/proc/self/fdinfo/*")
	require.NoError(t, err)
	for _, info := range infos {
		raw, err := os.ReadFile(info)
		if err != nil {
			continue // closed meanwhile
		}
		watched := 0
		ours := false
		for _, line := range strings.Split(string(raw), "\n") {
			if tfd, ok := strings.CutPrefix(line, "tfd:"); ok {
				watched++
				f := strings.Fields(tfd)
				ours = ours || (len(f) > 0 && f[0] == strconv.Itoa(fd))
			}
		}
		// The reader's epoll also watches its own eventfds.
		if ours && watched <= 3 {
			n, err := strconv.Atoi(filepath.Base(info))
			require.NoError(t, err)
			return n
		}
	}
	return 0
}

// threadsWaitingOn lists this process's threads blocked in epoll_wait or
// epoll_pwait on epfd (/proc/self/task/*/syscall).
func threadsWaitingOn(t *testing.T, epfd int) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/syscall")
	require.NoError(t, err)
	var waiting []string
	for _, task := range tasks {
		raw, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw))
		if len(f) < 2 {
			continue // running
		}
		nr, err1 := strconv.Atoi(f[0])
		arg, err2 := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if (nr == unix.SYS_EPOLL_WAIT || nr == unix.SYS_EPOLL_PWAIT) && arg == uint64(epfd) {
			waiting = append(waiting, fmt.Sprintf("%s: %s", task, strings.TrimSpace(string(raw))))
		}
	}
	return waiting
}

// readInBackground calls Read into rec on a goroutine of its own, and got
// after each record, until Read fails otherwise than with ErrNoData: the
// channel gets that error.
func readInBackground(p *Probe, rec *Record, got func()) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			err := p.Read(rec)
			if err == nil {
				got()
			} else if !errors.Is(err, ErrNoData) {
				done <- err
				return
			}
		}
	}()
	return done
}

// readAllNow reads what the ring buffer holds, without waiting.
func readAllNow(p *Probe, rec *Record) {
	for p.ReadNow(rec) == nil {
	}
}

// TestCloseWakesWaitingRead: Close, which calls Stop, ends a Read that
// waits for its poll interval with ErrStopped, and frees the ring buffer
// only once that Read is done with it (under -race: no race).
func TestCloseWakesWaitingRead(t *testing.T) {
	p := loadProbe(t, Options{Mode: AttachTPBTF, PollInterval: time.Minute})
	var rec Record
	readAllNow(p, &rec)
	done := readInBackground(p, &rec, func() {})
	time.Sleep(200 * time.Millisecond) // let Read wait
	require.NoError(t, p.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrStopped)
	case <-time.After(10 * time.Second):
		t.Fatal("Read still waits after Close")
	}
}
