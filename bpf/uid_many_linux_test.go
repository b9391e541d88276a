package bpf

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestConnectionUIDDistinct: 100,000 connections between two namespaces
// (the client closes with a reset, so no TIME_WAIT holds its ports and
// they are reused), every client open record's UID is its own, and the
// server's open record of each connection carries the same one.
func TestConnectionUIDDistinct(t *testing.T) {
	const n = 100_000
	netnstest.Heavy(t)
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	var mu sync.Mutex
	client, server := make(map[uint64]int, n), make(map[uint64]int, n)
	unknown := 0
	collect(p, func(r *Record) bool {
		if r.Kind != KindOpen || (r.LocalAddr != pair.ClientIP && r.LocalAddr != pair.ServerIP) {
			return false
		}
		uid, ok := r.UID()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !ok:
			unknown++
		case r.LocalAddr == pair.ClientIP:
			client[uid]++
		default:
			server[uid]++
		}
		return false // counted here, not kept
	})
	target := sink(t, pair, "9310")
	before, err := p.Stats()
	require.NoError(t, err)
	require.NoError(t, pair.Client.Do(func() error {
		for range n {
			c, err := net.Dial("tcp", target)
			if err != nil {
				return err
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		return nil
	}))
	opens := func() (c, s, u int) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range client {
			c += k
		}
		for _, k := range server {
			s += k
		}
		return c, s, unknown
	}
	require.Eventually(t, func() bool { c, s, u := opens(); return c+u >= n && s >= n }, 60*time.Second, 50*time.Millisecond,
		"the open records of both ends")
	after, err := p.Stats()
	require.NoError(t, err)
	require.Equal(t, before.Dropped, after.Dropped, "records dropped in the kernel")

	mu.Lock()
	defer mu.Unlock()
	assert.Zero(t, unknown, "every open record knows both ISNs")
	assert.Len(t, client, n, "a UID per connection: %d collisions", n-len(client))
	missing := 0
	for uid := range server {
		if client[uid] == 0 {
			missing++
		}
	}
	assert.Zero(t, missing, "the server's open records carry the client's UIDs")
}
