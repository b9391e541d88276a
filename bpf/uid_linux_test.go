package bpf

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// synCapture records the sequence numbers of the SYNs and SYN-ACKs seen
// in a namespace (an AF_PACKET socket, both directions), by client port.
type synCapture struct {
	mu      sync.Mutex
	syn     map[uint16]uint32 // client port -> the client's ISN
	synAck  map[uint16]uint32 // client port -> the server's ISN
	fd      int
	stopped chan struct{}
}

func captureSYNs(t *testing.T, ns *netnstest.NS, serverPort uint16) *synCapture {
	t.Helper()
	c := &synCapture{syn: map[uint16]uint32{}, synAck: map[uint16]uint32{}, stopped: make(chan struct{})}
	require.NoError(t, ns.Do(func() (err error) {
		c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL))) // outgoing packets reach ETH_P_ALL sockets only
		return err
	}))
	tv := unix.Timeval{Usec: 50000}
	require.NoError(t, unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
	go func() {
		defer close(c.stopped)
		buf := make([]byte, 256)
		for {
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			c.parse(buf[:n], serverPort)
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *synCapture) parse(p []byte, serverPort uint16) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return
	}
	ihl := int(p[0]&0xf) * 4
	if len(p) < ihl+20 {
		return
	}
	tcp := p[ihl:]
	sport, dport := binary.BigEndian.Uint16(tcp[0:]), binary.BigEndian.Uint16(tcp[2:])
	seq := binary.BigEndian.Uint32(tcp[4:])
	const fSYN, fACK = 0x02, 0x10
	flags := tcp[13]
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case flags&fSYN != 0 && flags&fACK == 0 && dport == serverPort:
		c.syn[sport] = seq
	case flags&fSYN != 0 && flags&fACK != 0 && sport == serverPort:
		c.synAck[dport] = seq
	}
}

func (c *synCapture) stop() {
	if c.fd != 0 {
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
		_ = unix.Close(c.fd)
		<-c.stopped
		c.fd = 0
	}
}

func (c *synCapture) isns(port uint16) (client, server uint32, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	client, ok1 := c.syn[port]
	server, ok2 := c.synAck[port]
	return client, server, ok1 && ok2
}

// TestConnectionUID: the ISNs the records derive (snd_una - bytes_acked,
// rcv_nxt - bytes_received, by direction) are those of the SYN and SYN-ACK
// on the wire, on the open, update and close records of both ends, so both
// ends carry the same UID; and UIDs differ between connections.
func TestConnectionUID(t *testing.T) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		t.Run(string(mode), func(t *testing.T) { testConnectionUID(t, mode) })
	}
}

func testConnectionUID(t *testing.T, mode AttachMode) {
	const (
		port  = 9300
		conns = 5
		many  = 3000
	)
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: mode})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP })
	target := sink(t, pair, "9300")
	capt := captureSYNs(t, pair.Client, port)

	var ports []uint16
	var walked []Record
	for i := range conns {
		c, err := pair.Client.Dial(t.Context(), target)
		require.NoError(t, err)
		send(t, c, 1000*(i+1))
		if mode == AttachTPBTF {
			time.Sleep(20 * time.Millisecond) // let the server read
			_, err := p.Walk(func(r *Record) {
				if r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP {
					walked = append(walked, *r)
				}
			})
			require.NoError(t, err)
		}
		ports = append(ports, uint16(c.LocalAddr().(*net.TCPAddr).Port))
		require.NoError(t, c.Close())
	}
	time.Sleep(50 * time.Millisecond)
	capt.stop()

	clientPort := func(r *Record) uint16 {
		if r.LocalAddr == pair.ClientIP {
			return r.LocalPort
		}
		return r.PeerPort
	}
	recs := col.waitFor(t, "open and close of both ends", func(rs []Record) bool { return len(rs) >= 4*conns })
	byPort := map[uint16][]Record{}
	for _, r := range append(recs, walked...) {
		byPort[clientPort(&r)] = append(byPort[clientPort(&r)], r)
	}
	for _, cp := range ports {
		cISN, sISN, ok := capt.isns(cp)
		require.True(t, ok, "SYN and SYN-ACK of port %d captured", cp)
		rs := byPort[cp]
		if mode == AttachTPBTF {
			require.Len(t, rs, 6, "open, update, close on both ends of port %d", cp)
		} else {
			require.Len(t, rs, 4, "open and close on both ends of port %d", cp)
		}
		var uids []uint64
		for _, r := range rs {
			if r.Kind != KindOpen {
				// The direction comes from the open record; a client's
				// report knows it is the client (FlagConnected).
				assert.Equal(t, r.Kind == KindUpdate && r.LocalAddr == pair.ClientIP, r.ISNKnown, "%v record", r.Kind)
				assert.Equal(t, r.ISNKnown, r.Flags&FlagConnected != 0)
				if r.LocalAddr == pair.ClientIP {
					r.SetDirection(DirectionOutbound)
				} else {
					r.SetDirection(DirectionInbound)
				}
			}
			require.True(t, r.ISNKnown, "%v of port %d", r.Kind, cp)
			assert.Equal(t, cISN, r.ClientISN, "client ISN: %v record of %v", r.Kind, r.Direction)
			assert.Equal(t, sISN, r.ServerISN, "server ISN: %v record of %v", r.Kind, r.Direction)
			uid, ok := r.UID()
			require.True(t, ok)
			uids = append(uids, uid)
		}
		for _, u := range uids {
			assert.Equal(t, uids[0], u, "one UID on every record of both ends of port %d", cp)
		}
	}

	// Many connections: every open record's UID is its own, and the
	// server's open record of the same connection has it too.
	before := len(col.snapshot())
	require.NoError(t, openAndClose(pair, target, many))
	recs = col.waitFor(t, "the opens of many connections", func(rs []Record) bool {
		n := 0
		for _, r := range rs[before:] {
			if r.Kind == KindOpen {
				n++
			}
		}
		return n >= 2*many
	})
	client, server := map[uint16]uint64{}, map[uint16]uint64{}
	seen := map[uint64]uint16{}
	for _, r := range recs[before:] {
		if r.Kind != KindOpen {
			continue
		}
		uid, ok := r.UID()
		require.True(t, ok)
		if r.LocalAddr == pair.ClientIP {
			if other, dup := seen[uid]; dup && other != r.LocalPort {
				t.Errorf("UID %x of client ports %d and %d", uid, other, r.LocalPort)
			}
			seen[uid] = r.LocalPort
			client[r.LocalPort] = uid
		} else {
			server[r.PeerPort] = uid
		}
	}
	assert.Len(t, seen, many, "distinct UIDs")
	for cp, uid := range client {
		assert.Equal(t, uid, server[cp], "both ends of port %d", cp)
	}
}
