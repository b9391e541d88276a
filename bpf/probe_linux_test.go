package bpf

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// This package's tests use 10.201.0.0/16.
const testOctet = 201

// collector reads the probe on a goroutine and keeps the records whose
// addresses belong to the test: the probe sees every connection on the host.
type collector struct {
	mu   sync.Mutex
	recs []Record
	done chan error
}

func collect(p *Probe, keep func(*Record) bool) *collector {
	c := &collector{done: make(chan error, 1)}
	go func() {
		var rec Record
		for {
			err := p.Read(&rec)
			switch {
			case err == nil:
				if keep(&rec) {
					c.mu.Lock()
					c.recs = append(c.recs, rec)
					c.mu.Unlock()
				}
			case errors.Is(err, ErrNoData):
			case errors.Is(err, ErrStopped):
				c.done <- nil
				return
			default:
				c.done <- err
				return
			}
		}
	}()
	return c
}

func (c *collector) snapshot() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Record(nil), c.recs...)
}

// waitFor polls until pred holds for the collected records.
func (c *collector) waitFor(t *testing.T, what string, pred func([]Record) bool) []Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if recs := c.snapshot(); pred(recs) {
			return recs
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; have %d records", what, len(c.snapshot()))
	return nil
}

// loadProbe loads the probe with opts (in opts.Mode, which must be set)
// and closes it when the test ends.
func loadProbe(t *testing.T, opts Options) *Probe {
	t.Helper()
	netnstest.RequireRoot(t)
	p, err := Load(opts)
	require.NoError(t, err)
	require.Equal(t, opts.Mode, p.Mode())
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestProbeExactBytes(t *testing.T) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		t.Run(string(mode), func(t *testing.T) { testExactBytes(t, mode, false) })
		// As if the kernel had kept the probe from every state change: its
		// backup program alone must make the same records.
		t.Run(string(mode)+"/backup-alone", func(t *testing.T) { testExactBytes(t, mode, true) })
	}
}

func testExactBytes(t *testing.T, mode AttachMode, backupOnly bool) {
	const (
		conns    = 4
		request  = 100000
		response = 5000
		port     = 8080
		closed   = 8081
		dropped  = 8082
	)
	pair := netnstest.NewPair(t, testOctet)
	p := loadProbe(t, Options{Mode: mode, backupOnly: backupOnly})
	before, err := p.Stats()
	require.NoError(t, err)
	ours := func(r *Record) bool {
		for _, a := range []netip.Addr{pair.ClientIP, pair.ServerIP} {
			if r.LocalAddr == a {
				return true
			}
		}
		return false
	}
	col := collect(p, ours)
	srv := netnstest.StartServer(t, pair, port, request, response)

	ctx := context.Background()
	clientPorts := map[uint16]bool{}
	for range conns {
		cp, err := srv.Exchange(ctx, pair)
		require.NoError(t, err)
		clientPorts[cp] = true
	}
	require.NoError(t, netnstest.Refused(ctx, pair, closed))
	start := time.Now()
	require.NoError(t, netnstest.TimedOut(t, pair, dropped))
	t.Logf("black-hole connect gave up after %v", time.Since(start))

	// 4 records per exchange (open and close on both ends) and 2 failures.
	recs := col.waitFor(t, "all records", func(rs []Record) bool { return len(rs) >= conns*4+2 })

	var opens, closes, failures int
	openOf := map[uint64]Record{}
	for _, r := range recs {
		if r.Kind == KindOpen {
			assert.NotContains(t, openOf, r.ConnID, "connection ids are unique")
			openOf[r.ConnID] = r
		}
	}
	for _, r := range recs {
		switch r.Kind {
		case KindOpen:
			opens++
			assertOpen(t, r)
		case KindClose:
			closes++
			open, ok := openOf[r.ConnID]
			if !assert.True(t, ok, "close record joins an open record by id: %+v", r) {
				continue
			}
			assertClose(t, pair, open, r, clientPorts, port, request, response)
		case KindFailure:
			failures++
			assert.Equal(t, DirectionOutbound, r.Direction)
			assert.Equal(t, pair.ClientIP, r.LocalAddr)
			assert.Equal(t, StateSynSent, r.OldState)
			switch r.PeerPort {
			case closed:
				assert.Equal(t, pair.ServerIP, r.PeerAddr)
				assert.Equal(t, int32(syscall.ECONNREFUSED), r.Errno)
			case dropped:
				assert.Equal(t, pair.BlackHole, r.PeerAddr)
				assert.Equal(t, int32(syscall.ETIMEDOUT), r.Errno)
				assert.GreaterOrEqual(t, r.Duration(), 2*time.Second)
			default:
				t.Errorf("failure record for unexpected port %d", r.PeerPort)
			}
			assert.NotZero(t, r.PID)
			assert.NotEmpty(t, r.CommString())
			assert.Zero(t, r.RTTMin, "no RTT was ever measured")
		}
	}
	assert.Equal(t, conns*2, opens, "open records")
	assert.Equal(t, conns*2, closes, "close records")
	assert.Equal(t, 2, failures, "failure records")

	after, err := p.Stats()
	require.NoError(t, err)
	assert.Equal(t, before.Dropped, after.Dropped, "records dropped in the kernel")
	assert.Zero(t, takenSlots(p), "every handshake left the handshake table: opened or failed")
	assert.Greater(t, after.Emitted, before.Emitted)
	if backupOnly {
		assert.GreaterOrEqual(t, after.Rescued-before.Rescued, uint64(len(recs)), "the backup took every state change that made a record")
	} else {
		assert.Equal(t, after.Missed, before.Missed, "no state change missed")
	}
}

// assertOpen: the open record carries how the connection began; a close
// record carries only its id and counters.
func assertOpen(t *testing.T, r Record) {
	t.Helper()
	assert.NotZero(t, r.ConnID)
	assert.False(t, r.Start.IsZero(), "start")
	assert.False(t, r.Time.Before(r.Start))
	assert.Zero(t, r.Flags&FlagAdopted)
	switch r.Direction {
	case DirectionOutbound:
		assert.Equal(t, StateSynSent, r.OldState)
		assert.NotZero(t, r.PID)
		assert.NotEmpty(t, r.CommString())
	case DirectionInbound:
		assert.Equal(t, StateSynRecv, r.OldState)
		assert.Zero(t, r.PID)
	default:
		t.Errorf("open record without direction: %+v", r)
	}
}

func assertClose(t *testing.T, pair *netnstest.Pair, open, r Record, clientPorts map[uint16]bool, port uint16, request, response uint64) {
	t.Helper()
	assert.Zero(t, r.Errno)
	assert.True(t, r.Time.After(open.Time), "closed after it opened")
	assert.Equal(t, open.LocalAddr, r.LocalAddr)
	assert.Equal(t, open.LocalPort, r.LocalPort)
	assert.True(t, r.Start.IsZero(), "the start came with the open record")
	assert.Equal(t, DirectionUnknown, r.Direction)
	r.SetDirection(open.Direction)
	assert.NotZero(t, r.NetNS)
	assert.Equal(t, FlagFinReceived, r.Flags&FlagFinReceived)
	assert.Zero(t, r.Flags&FlagAdopted)
	assert.Greater(t, r.SRTT, time.Duration(0))
	assert.Greater(t, r.RTTMin, time.Duration(0))
	switch open.Direction {
	case DirectionOutbound:
		assert.Equal(t, pair.ClientIP, r.LocalAddr)
		assert.Equal(t, pair.ServerIP, r.PeerAddr)
		assert.Equal(t, port, r.PeerPort)
		assert.True(t, clientPorts[r.LocalPort], "client port %d", r.LocalPort)
		assert.Equal(t, request, r.BytesSent, "client sent")
		assert.Equal(t, response, r.BytesReceived, "client received")
	case DirectionInbound:
		assert.Equal(t, pair.ServerIP, r.LocalAddr)
		assert.Equal(t, pair.ClientIP, r.PeerAddr)
		assert.Equal(t, port, r.LocalPort)
		assert.True(t, clientPorts[r.PeerPort], "client port %d", r.PeerPort)
		assert.Equal(t, response, r.BytesSent, "server sent")
		assert.Equal(t, request, r.BytesReceived, "server received")
	}
}

// TestReadNowDoesNotWait: ReadNow hands out what the ring buffer holds and
// returns ErrNoData at once when it is empty, where Read would wait for
// the poll interval (here a minute, and the few records stay below
// wakeup_bytes); after Stop it says so, and Read still ends at
// ErrStopped.
func TestReadNowDoesNotWait(t *testing.T) {
	pair := netnstest.NewPair(t, testOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF, PollInterval: time.Minute})
	target := sink(t, pair, "7001")
	const conns = 3
	require.NoError(t, openAndClose(pair, target, conns))

	// An open and a close on each end of each connection (the server's
	// close follows the client's).
	ours, empty := 0, false
	var rec Record
	for deadline := time.Now().Add(10 * time.Second); (ours < 4*conns || !empty) && time.Now().Before(deadline); {
		start := time.Now()
		err := p.ReadNow(&rec)
		require.Less(t, time.Since(start), 500*time.Millisecond, "ReadNow waited")
		switch {
		case err == nil:
			if rec.LocalAddr == pair.ClientIP || rec.LocalAddr == pair.ServerIP {
				ours++
			}
		case errors.Is(err, ErrNoData):
			empty = ours == 4*conns
			time.Sleep(time.Millisecond)
		default:
			require.NoError(t, err)
		}
	}
	require.Equal(t, 4*conns, ours, "records of the test's connections")
	require.True(t, empty, "ErrNoData on the empty ring buffer")

	require.NoError(t, p.Stop())
	require.ErrorIs(t, p.ReadNow(&rec), ErrStopped)
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := p.Read(&rec)
		if errors.Is(err, ErrStopped) {
			break
		}
		require.True(t, err == nil || errors.Is(err, ErrNoData), "Read: %v", err)
		require.True(t, time.Now().Before(deadline), "Read never reported ErrStopped")
	}
}
