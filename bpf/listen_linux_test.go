package bpf

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestWalkBacklogs: a listener with a backlog of 1 that never accepts holds
// two completed connections (the queue takes backlog + 1); the walk
// reports its queue 2 of 1, with the namespace's address for one on any
// address, and the listeners' records never reach Walk's visitor. Its
// namespace's ListenStats count the connects that found the queue full.
func TestWalkBacklogs(t *testing.T) {
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	var lfd int
	require.NoError(t, pair.Server.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		lfd = fd
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 9330}); err != nil { // any address
			return err
		}
		return unix.Listen(fd, 1)
	}))
	t.Cleanup(func() { unix.Close(lfd) })
	for range 2 {
		c, err := pair.Client.Dial(t.Context(), netip.AddrPortFrom(pair.ServerIP, 9330).String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
	}
	// A third connect finds the queue full: the listener drops its SYN.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if c, err := pair.Client.Dial(ctx, netip.AddrPortFrom(pair.ServerIP, 9330).String()); err == nil {
		c.Close()
	}
	ino, err := pair.Server.Inode()
	require.NoError(t, err)

	_, err = p.Walk(func(r *Record) {
		assert.NotEqual(t, StateListen, r.NewState, "listeners are not visited")
	})
	require.NoError(t, err)
	var got []Backlog
	p.Backlogs(func(b Backlog) {
		if b.NetNS == uint32(ino) {
			got = append(got, b)
		}
	})
	require.Len(t, got, 1, "the server namespace's one listener")
	assert.Equal(t, Backlog{NetNS: uint32(ino), Local: pair.ServerIP, Port: 9330, Queued: 2, Limit: 1}, got[0])
	var stats []ListenStats
	require.NoError(t, p.Listen(func(ls ListenStats) {
		if ls.NetNS == uint32(ino) {
			stats = append(stats, ls)
		}
	}))
	require.Len(t, stats, 1)
	assert.Equal(t, pair.ServerIP, stats[0].Local)
	assert.Positive(t, stats[0].Overflows, "the third connect overflowed the queue")
}
