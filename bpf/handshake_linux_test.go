package bpf

import (
	"context"
	"fmt"
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
// in flight (one set of one slot), or four (one set of four), held by
// connects to a black hole, one more connect cannot be remembered. It is
// counted, and its open record still goes out, flagged adopted, without
// process or start; the held ones' failures keep both.
func TestFullHandshakeTableIsCounted(t *testing.T) {
	for _, slots := range []uint32{1, 4} {
		t.Run(fmt.Sprintf("%d slots", slots), func(t *testing.T) { testFullHandshakeTable(t, slots) })
	}
}

func testFullHandshakeTable(t *testing.T, slots uint32) {
	netnstest.RequireRoot(t)
	pair := netnstest.NewPair(t, testOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF, handshakes: slots})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP })
	srv := netnstest.StartServer(t, pair, 8080, 10, 10)

	var hole sync.WaitGroup
	for i := range uint16(slots) {
		hole.Go(func() { assert.NoError(t, netnstest.TimedOut(t, pair, 8082+i)) })
	}
	require.Eventually(t, func() bool { return takenSlots(p) == int(slots) }, 5*time.Second, 10*time.Millisecond,
		"the black-hole connects hold every slot")

	_, err := srv.Exchange(context.Background(), pair)
	require.NoError(t, err)
	hole.Wait()

	recs := col.waitFor(t, "open, close and the failures", func(rs []Record) bool { return len(rs) == 2+int(slots) })
	st, err := p.Stats()
	require.NoError(t, err)
	// At least: another connect on the node while the slots are held counts too.
	assert.GreaterOrEqual(t, st.NoState, uint64(1), "the last handshake found the table full")
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
	assert.Zero(t, takenSlots(p), "every handshake left the table")
}

// takenSlots counts the handshake table's slots in use.
func takenSlots(p *Probe) int {
	var key uint32
	var slot tcpconnHandshake
	n := 0
	// Only this process's handshakes: the probe sees the whole machine's,
	// and another process's test may hold a handshake in flight for
	// seconds (a dropped SYN).
	self := uint32(os.Getpid())
	it := p.objs.Connecting.Iterate()
	for it.Next(&key, &slot) {
		if slot.Sk != 0 && slot.Pid == self {
			n++
		}
	}
	return n
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
			closed.SetDirection(open.Direction)
			assert.Equal(t, uint64(5), closed.BytesSent)
			assert.Equal(t, uint64(5), closed.BytesReceived, "it read nothing, but received its own bytes")
			assert.Zero(t, takenSlots(p), "no handshake entry left")
		})
	}
}
