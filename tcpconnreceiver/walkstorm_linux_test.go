package tcpconnreceiver

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// init lets HoldInChildren run this test binary as a connection holder
// (a process may hold only so many sockets): before TestMain, which
// mdatagen writes.
func init() { netnstest.ChildMain() }

// walkStormPrefix is the walk storm test's /24, in 10.209.0.0/16 (the
// walk's range): BenchmarkWalk's pairs, which another process may hold
// open meanwhile, take 10.209.1.0/24 on.
var walkStormPrefix = [3]byte{10, 209, 100}

// stormProbe is the probe, counting the report walks, those that ran
// whole while the storm did (and how long the slowest of those took),
// those of them during which the receiver read records from the ring
// buffer (read counts them), and the sockets they saw.
type stormProbe struct {
	*bpf.Probe
	read                  func() int64
	storm                 atomic.Bool
	walks, walksDuring    atomic.Int64
	drainedDuring         atomic.Int64
	slowest               atomic.Int64 // nanoseconds
	lastWalked, maxWalked atomic.Int64
}

func (s *stormProbe) Walk(visit func(*bpf.Record)) (int, error) {
	during, read := s.storm.Load(), s.read()
	start := time.Now()
	n, err := s.Probe.Walk(visit)
	if during && s.storm.Load() {
		s.walksDuring.Add(1)
		if s.read() > read {
			s.drainedDuring.Add(1)
		}
		if took := int64(time.Since(start)); took > s.slowest.Load() {
			s.slowest.Store(took)
		}
	}
	s.lastWalked.Store(int64(n))
	if int64(n) > s.maxWalked.Load() {
		s.maxWalked.Store(int64(n))
	}
	s.walks.Add(1)
	return n, err
}

func (s *stormProbe) waitWalks(t *testing.T, n int64) {
	t.Helper()
	target := s.walks.Load() + n
	require.Eventually(t, func() bool { return s.walks.Load() >= target }, time.Minute, 10*time.Millisecond, "%d walks", n)
}

// TestKernelWalkDuringStorm walks 100,000 open connections (200,000
// sockets, adopted at start) again and again while a storm of short
// connections (up to 500 a second) opens and closes others. The reader
// reads the ring buffer while each walk runs (before, it read it only
// between walks, and the storm overflowed a ring buffer that did not hold
// a whole walk's worth of it), nothing is dropped, in the kernel or in the
// receiver, and the counts are exact: every storm connection opened and
// closed once with its bytes, the held ones open, none lost.
func TestKernelWalkDuringStorm(t *testing.T) {
	const (
		held     = 100_000
		request  = 300
		response = 700
		workers  = 4
		// stormRate connections a second at most, each four records: an
		// open and a close on each end. Enough to be read during every
		// walk, and not so many that the test starves the kernel tests
		// of other packages, which go test runs beside it.
		stormRate = 500
	)
	netnstest.Heavy(t)
	pair := netnstest.NewPairOn(t, walkStormPrefix)
	start := time.Now()
	netnstest.HoldInChildren(t, pair, held)
	t.Logf("%d connections held open in %v", held, time.Since(start))

	cfg := createDefaultConfig()
	cfg.Probe.LockFile = filepath.Join(t.TempDir(), "lock")
	cfg.FlushInterval = time.Hour // one flush, at Shutdown, after everything was read
	cfg.ReportInterval = time.Second
	cfg.Filter.IncludeCIDRs = []string{fmt.Sprintf("%d.%d.%d.0/24", walkStormPrefix[0], walkStormPrefix[1], walkStormPrefix[2])}

	probe := &stormProbe{}
	metrics, logs := new(consumertest.MetricsSink), new(consumertest.LogsSink)
	var started atomic.Pointer[tcpconnReceiver] // walks begin before Start returns
	probe.read = func() int64 {
		if r := started.Load(); r != nil {
			return r.recordsRead.Load()
		}
		return 0
	}
	rcv := startKernelReceiverOn(t, cfg, identity.AddressOnly{}, metrics, logs, func(opts bpf.Options) (recordSource, error) {
		p, err := bpf.Load(opts)
		if err != nil {
			return nil, err
		}
		probe.Probe = p
		return probe, nil
	})
	started.Store(rcv)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = rcv.Shutdown(context.Background())
		}
	})
	probe.waitWalks(t, 1) // the start-up walk adopted them, and one more

	srv := netnstest.StartServer(t, pair, 7400, request, response)
	var made atomic.Int64
	stop := make(chan struct{})
	stormErrs := make(chan error, workers)
	probe.storm.Store(true)
	start = time.Now()
	for range workers {
		go func() {
			stormErrs <- pair.Client.Do(func() error {
				pace := time.NewTicker(workers * time.Second / stormRate)
				defer pace.Stop()
				for {
					select {
					case <-stop:
						return nil
					case <-pace.C:
					}
					c, err := net.Dial("tcp", srv.Addr.String())
					if err != nil {
						return err
					}
					err = netnstest.Ask(c, request, response)
					c.Close()
					if err != nil {
						return err
					}
					made.Add(1)
				}
			})
		}()
	}
	require.Eventually(t, func() bool { return probe.walksDuring.Load() >= 3 }, time.Minute, 10*time.Millisecond,
		"three walks while the storm ran")
	probe.storm.Store(false)
	close(stop)
	for range workers {
		require.NoError(t, <-stormErrs)
	}
	storm := made.Load()
	t.Logf("storm: %d connections in %v, during %d walks of up to %d sockets, the slowest %v", storm, time.Since(start),
		probe.walksDuring.Load(), probe.maxWalked.Load(), time.Duration(probe.slowest.Load()))
	assert.Equal(t, probe.walksDuring.Load(), probe.drainedDuring.Load(), "records read from the ring buffer during every walk")
	srv.WaitServed(t, int(storm))
	probe.waitWalks(t, 3) // a connection left behind by a walk would be lost by now
	assert.GreaterOrEqual(t, probe.lastWalked.Load(), int64(2*held), "the walks saw both ends of every held connection")
	st, err := probe.Stats()
	require.NoError(t, err)

	require.NoError(t, rcv.Shutdown(context.Background()))
	stopped = true

	assert.Zero(t, st.Dropped, "records dropped in the kernel")
	assert.Zero(t, st.Missed, "state changes the probe missed")
	require.Len(t, metrics.AllMetrics(), 1)
	md := metrics.AllMetrics()[0]
	assert.Zero(t, findSum(t, md, "tcpconn.probe.records.dropped"))
	assert.Zero(t, findSum(t, md, "tcpconn.probe.events.missed"))
	assert.Zero(t, findSum(t, md, "tcpconn.logs.dropped"))
	assert.Zero(t, findSum(t, md, "tcpconn.connections.lost"))
	assert.Zero(t, findSum(t, md, "tcpconn.connections.evicted"))
	assert.Equal(t, int64(2*storm), findSum(t, md, "tcp.connections.opened"), "both ends of every storm connection (the held ones adopted)")
	assert.Equal(t, int64(2*storm), findSum(t, md, "tcp.connections.closed"))
	assert.Equal(t, int64(2*held), findSum(t, md, "tcp.connections.open"))
	assert.Equal(t, storm*(request+response), findSum(t, md, "tcp.bytes.sent"))
	assert.Equal(t, storm*(request+response), findSum(t, md, "tcp.bytes.received"))
	var closes int64
	forEachLog(logs.AllLogs(), func(lr plog.LogRecord) {
		if lr.EventName() == "tcp.connection.close" {
			closes++
		}
	})
	assert.Equal(t, 2*storm, closes, "a close record for each end")
}
