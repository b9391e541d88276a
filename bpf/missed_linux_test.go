package bpf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestEveryRecordIsDeliveredOrCounted runs a storm from two threads, one
// per CPU here, so that softirqs interrupt the program: each connection's
// four records (open and close at both ends) are delivered, or counted as
// dropped (ring buffer full) or missed (the kernel skipped the program
// because it was already running on that CPU). The probe's miss count is
// the kernel's own, as bpftool shows it.
func TestEveryRecordIsDeliveredOrCounted(t *testing.T) {
	const threads, perThread, port = 2, 2000, 7310
	netnstest.RequireRoot(t)
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		netnstest.Unavailable(t, "bpftool")
	}
	pair := netnstest.NewPair(t, testOctet)
	pair.Client.Exec(t, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
	target := sink(t, pair, fmt.Sprint(port))

	p, err := Load(Options{Mode: AttachTPBTF})
	require.NoError(t, err)
	defer p.Close()
	var delivered sync.WaitGroup
	var ours, opens, closes int
	delivered.Go(func() {
		var rec Record
		for {
			err := p.Read(&rec)
			if errors.Is(err, ErrStopped) {
				return
			}
			if err != nil || (rec.LocalPort != port && rec.PeerPort != port) ||
				(rec.LocalAddr != pair.ClientIP && rec.LocalAddr != pair.ServerIP) {
				continue
			}
			ours++
			switch rec.Kind {
			case KindOpen:
				opens++
			case KindClose:
				closes++
			}
		}
	})

	var storm sync.WaitGroup
	errs := make([]error, threads)
	for i := range threads {
		storm.Go(func() {
			errs[i] = pair.Client.Do(func() error {
				for range perThread {
					c, err := net.Dial("tcp", target)
					if err != nil {
						return err
					}
					c.Close()
				}
				return nil
			})
		})
	}
	storm.Wait()
	require.NoError(t, errors.Join(errs...))
	time.Sleep(500 * time.Millisecond) // the server ends close after the clients'
	require.NoError(t, p.Stop())
	delivered.Wait()

	st, err := p.Stats()
	require.NoError(t, err)
	want := 4 * threads * perThread
	t.Logf("storm of %d connections: %d of its %d records delivered (%d opens, %d closes); node-wide %d dropped, %d missed",
		threads*perThread, ours, want, opens, closes, st.Dropped, st.Missed)
	assert.LessOrEqual(t, ours, want, "no record twice")
	assert.GreaterOrEqual(t, uint64(ours)+st.Dropped+st.Missed, uint64(want),
		"every record of the storm is delivered or counted as dropped or missed")
	if st.Dropped == 0 && st.Missed == 0 {
		assert.Equal(t, want, ours)
	}

	info, err := p.coll.Programs[modeObjects[AttachTPBTF].prog].Info()
	require.NoError(t, err)
	id, _ := info.ID()
	out, err := exec.Command(bpftool, "-j", "prog", "show", "id", fmt.Sprint(id)).Output()
	require.NoError(t, err)
	var shown struct {
		RecursionMisses uint64 `json:"recursion_misses"` // absent when 0
	}
	require.NoError(t, json.Unmarshal(out, &shown))
	assert.Equal(t, shown.RecursionMisses, st.Missed, "the kernel's recursion misses, as bpftool shows them")
}
