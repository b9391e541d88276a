package bpf

import "time"

// AttachMode chooses how the probe hooks inet_sock_set_state.
type AttachMode string

const (
	// AttachAuto tries tp_btf and falls back to raw_tp.
	AttachAuto AttachMode = "auto"
	// AttachTPBTF uses the BTF-typed tracepoint: direct reads, socket
	// cookies as connection ids, and the report walk.
	AttachTPBTF AttachMode = "tp_btf"
	// AttachRawTP uses the raw tracepoint with CO-RE probe reads, for
	// kernels without tp_btf; no report walk there.
	AttachRawTP AttachMode = "raw_tp"
)

// Options tune the probe. The zero value is usable.
type Options struct {
	Mode AttachMode
	// RingBufferBytes is the ring buffer size: a power of two, at least a page.
	RingBufferBytes uint32
	// WakeupBytes is how much data must be pending before the kernel wakes
	// the reader; below it the reader finds records at its next poll. 0:
	// an eighth of the ring buffer (WakeupFraction).
	WakeupBytes uint64
	// PollInterval bounds how long a record waits in the ring buffer.
	PollInterval time.Duration

	// TrackedSockets sizes the probe's table of established sockets, which
	// the report walk reads (every namespace at once), in slots: a power
	// of two, 16 bytes each (and 32 beside it for retransmit types, only
	// written for sockets that retransmit). 0: TCPCONN_TRACKED_SLOTS
	// (131,072: 2 MiB, 4 MiB of types), room for about 90k sockets; past
	// that the walks run in each namespace (Stats.Untracked). A larger
	// table costs the state-change program more per connection (a cache
	// line farther away): +0.45 us on a connection storm at the default.
	TrackedSockets uint32

	// LockFile, when set, is taken exclusively for the probe's lifetime, so
	// that a second probe on the node fails to start.
	LockFile string

	// tracepoint replaces inet_sock_set_state in raw_tp mode (tests of
	// attach failures).
	tracepoint string
	// handshakes, when set, sizes the table of outbound handshakes in
	// flight, in slots, a power of two (tests of a full table).
	handshakes uint32
	// noTrackedWalk leaves the tracked table's walk out, as on kernels
	// before 6.4: every walk runs in each namespace.
	noTrackedWalk bool
	// NoBackup leaves out the backup program that takes the state changes
	// the kernel skips the probe for (see Stats.Missed): about 1 µs less
	// CPU per connection, and those records are lost, counted in Missed.
	NoBackup bool

	// backupOnly attaches the backup program alone, as if the kernel had
	// kept the probe from every state change (tests of the backup).
	backupOnly bool
	// noAttach loads the programs and attaches none (tests that run them
	// with BPF_PROG_TEST_RUN).
	noAttach bool
}

// Default option values.
const (
	DefaultRingBufferBytes = 4 << 20
	// DefaultTrackedSockets is the tracked table's default size, the
	// program's own (TCPCONN_TRACKED_SLOTS).
	DefaultTrackedSockets = int(tcpconnTcpconnGeometryTCPCONN_TRACKED_SLOTS)
	DefaultPollInterval   = 50 * time.Millisecond
	// WakeupFraction of the ring buffer is the default WakeupBytes: on a
	// connection storm waking the reader every 512 KiB of a 4 MiB ring cost
	// it half the CPU of waking it every 64 KiB (0.25 against 0.5 µs per
	// connection), and 1 MiB no less again, while leaving seven eighths of
	// the ring for records that arrive before the reader runs.
	WakeupFraction = 8
)

func (o *Options) setDefaults() {
	if o.Mode == "" {
		o.Mode = AttachAuto
	}
	if o.RingBufferBytes == 0 {
		o.RingBufferBytes = DefaultRingBufferBytes
	}
	if o.WakeupBytes == 0 {
		o.WakeupBytes = uint64(o.RingBufferBytes / WakeupFraction)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
}

// Stats are the probe's kernel-side counters, summed over CPUs.
type Stats struct {
	// Emitted records were committed to the ring buffer.
	Emitted uint64
	// Dropped records were lost because the ring buffer was full.
	Dropped uint64
	// NoState counts outbound handshakes the probe could not remember
	// (their set of its handshake table was full): their open or failure
	// records come without process and start time, flagged adopted.
	NoState uint64
	// Missed counts state changes that made no record although they
	// should have: the kernel skips a tracing program that fires again on a
	// CPU where it is already running (a softirq interrupting it) and counts
	// the skip; the backup program takes those (Rescued), and this is what
	// neither took. Expected to stay 0; without the backup (NoBackup) it is
	// every skip, an upper bound (about half make no record). The
	// connection tracker recovers from a missed close at the next walks.
	Missed uint64
	// Rescued counts the state changes the kernel kept the probe from that
	// its backup program handled instead: nothing was lost.
	Rescued uint64
	// Skipped is every state change the kernel kept the probe from (its
	// recursion misses): rescued, known to make no record, or missed.
	Skipped uint64
	// Untracked counts established sockets the probe's table of them had
	// no room for: the walks after run in each network namespace, which
	// costs more but misses none, until they find room.
	Untracked uint64
	// Stale counts slots of that table the walk found naming a socket gone
	// without its close (a close the kernel kept both state-change
	// programs from, counted in Missed): freed.
	Stale uint64
}

// Stat keys: the probe's enum tcpconn_stat, as bpf2go generates it.
const (
	statEmitted   = uint32(tcpconnTcpconnStatTCPCONN_STAT_EMITTED)
	statDropped   = uint32(tcpconnTcpconnStatTCPCONN_STAT_DROPPED)
	statNoState   = uint32(tcpconnTcpconnStatTCPCONN_STAT_NO_STATE)
	statRescued   = uint32(tcpconnTcpconnStatTCPCONN_STAT_RESCUED)
	statNoRecord  = uint32(tcpconnTcpconnStatTCPCONN_STAT_SKIPPED_NO_RECORD)
	statUntracked = uint32(tcpconnTcpconnStatTCPCONN_STAT_UNTRACKED)
	statStale     = uint32(tcpconnTcpconnStatTCPCONN_STAT_STALE)
	// statCount is the number of counters, the size of the stats map.
	statCount = int(tcpconnTcpconnStatTCPCONN_STAT_MAX)
)

// statCounters says where Stats sums each of the probe's counters, by key:
// a counter the probe gained and Stats does not read is left nil (a test
// checks there is none).
func statCounters(s *Stats, skippedNoRecord *uint64) [statCount]*uint64 {
	return [statCount]*uint64{
		statEmitted:   &s.Emitted,
		statDropped:   &s.Dropped,
		statNoState:   &s.NoState,
		statRescued:   &s.Rescued,
		statNoRecord:  skippedNoRecord,
		statUntracked: &s.Untracked,
		statStale:     &s.Stale,
	}
}
