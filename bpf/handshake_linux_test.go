package bpf

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestFullHandshakeTableIsCounted: with room for one outbound handshake
// in flight, held by a connect to a black hole, a second connect cannot be
// remembered. It is counted, and its open record still goes out, flagged
// adopted, without process or start; the first one's failure keeps both.
func TestFullHandshakeTableIsCounted(t *testing.T) {
	netnstest.RequireRoot(t)
	pair := netnstest.NewPair(t, testOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF, handshakes: 1})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP })
	srv := netnstest.StartServer(t, pair, 8080, 10, 10)

	var hole sync.WaitGroup
	hole.Go(func() { assert.NoError(t, netnstest.TimedOut(t, pair, 8082)) })
	require.Eventually(t, func() bool { return holdsHandshake(p) }, 5*time.Second, 10*time.Millisecond,
		"the black-hole connect holds the only slot")

	_, err := srv.Exchange(context.Background(), pair)
	require.NoError(t, err)
	hole.Wait()

	recs := col.waitFor(t, "open, close and failure", func(rs []Record) bool { return len(rs) == 3 })
	st, err := p.Stats()
	require.NoError(t, err)
	// At least: another connect on the node while the slot is held counts too.
	assert.GreaterOrEqual(t, st.NoState, uint64(1), "the second handshake found the table full")
	for _, r := range recs {
		switch r.Kind {
		case KindOpen:
			assert.Equal(t, FlagAdopted, r.Flags&FlagAdopted)
			assert.Equal(t, DirectionOutbound, r.Direction)
			assert.Zero(t, r.PID)
			assert.True(t, r.Start.IsZero())
		case KindFailure:
			assert.Zero(t, r.Flags&FlagAdopted)
			assert.NotZero(t, r.PID)
			assert.False(t, r.Start.IsZero())
		}
	}
}

// holdsHandshake reports whether a slot of the handshake table is taken.
func holdsHandshake(p *Probe) bool {
	var key uint32
	var slot tcpconnHandshake
	it := p.coll.Maps["connecting"].Iterate()
	for it.Next(&key, &slot) {
		if slot.Sk != 0 {
			return true
		}
	}
	return false
}

// TestSimultaneousOpenIsOutbound connects a socket to its own address: its
// SYN meets it in SYN_SENT, it goes through SYN_RECV (a simultaneous open)
// and is reported as what it is, an outbound connection of this process,
// with its start; its handshake entry does not outlive it.
func TestSimultaneousOpenIsOutbound(t *testing.T) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		t.Run(string(mode), func(t *testing.T) {
			const port = 8090
			pair := netnstest.NewPair(t, testOctet)
			p := loadProbe(t, Options{Mode: mode})
			col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP && r.LocalPort == port })

			self := net.TCPAddr{IP: pair.ClientIP.AsSlice(), Port: port}
			require.NoError(t, pair.Client.Do(func() error {
				d := net.Dialer{LocalAddr: &self}
				c, err := d.Dial("tcp", self.String())
				if err != nil {
					return err
				}
				if _, err := c.Write([]byte("hello")); err != nil {
					return err
				}
				return c.Close()
			}))

			recs := col.waitFor(t, "open and close", func(rs []Record) bool { return len(rs) == 2 })
			open, closed := recs[0], recs[1]
			require.Equal(t, KindOpen, open.Kind)
			assert.Equal(t, StateSynRecv, open.OldState, "through SYN_RECV")
			assert.Equal(t, DirectionOutbound, open.Direction)
			assert.Equal(t, uint32(os.Getpid()), open.PID)
			assert.NotEmpty(t, open.CommString())
			assert.False(t, open.Start.IsZero(), "start from connect()")
			assert.Zero(t, open.Flags&FlagAdopted)
			assert.Equal(t, port, int(open.PeerPort))
			require.Equal(t, KindClose, closed.Kind)
			assert.Equal(t, open.ConnID, closed.ConnID)
			assert.Equal(t, uint64(5), closed.BytesSent)
			assert.Equal(t, uint64(5), closed.BytesReceived, "it read nothing, but received its own bytes")
			assert.False(t, holdsHandshake(p), "no handshake entry left")
		})
	}
}
