package bpf

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

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

	// LockFile, when set, is taken exclusively for the probe's lifetime, so
	// that a second probe on the node fails to start.
	LockFile string

	// tracepoint replaces inet_sock_set_state in raw_tp mode (tests of
	// attach failures).
	tracepoint string
	// handshakes, when set, sizes the table of outbound handshakes in
	// flight, in slots, a power of two (tests of a full table).
	handshakes uint32
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
	DefaultPollInterval    = 50 * time.Millisecond
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

// ErrNoData is returned by Read when no record arrived within the poll interval.
var ErrNoData = errors.New("no record within the poll interval")

// ErrStopped is returned by Read once Stop was called and every record
// produced before it has been read.
var ErrStopped = errors.New("probe stopped")

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
}

// Probe is the loaded and attached eBPF program and its ring buffer reader.
// Read is for one goroutine; Stop, Stats and Close may be called from any.
type Probe struct {
	mode    AttachMode
	coll    *ebpf.Collection
	links   []link.Link
	reader  *ringbuf.Reader
	raw     ringbuf.Record
	dec     decoder
	poll    time.Duration
	stopped atomic.Bool
	stopMu  sync.Mutex
	statsMu sync.Mutex
	perCPU  []uint64
	// fallback is why tp_btf was not used in auto mode.
	fallback error

	report  *link.Iter
	iterErr error
	lock    *nodeLock
	walkBuf []byte
	walkRec Record
}

// Load checks the kernel and privileges, loads the probe and attaches it.
// Every connection state change on the node is recorded from then on.
func Load(opts Options) (*Probe, error) {
	opts.setDefaults()
	if err := Preflight(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock rlimit: %w", err)
	}
	off, err := bootToWallOffset()
	if err != nil {
		return nil, err
	}
	lock, err := lockNode(opts.LockFile)
	if err != nil {
		return nil, err
	}

	p := &Probe{dec: decoder{bootToWall: off}, poll: opts.PollInterval, lock: lock}
	switch opts.Mode {
	case AttachTPBTF, AttachRawTP:
		err = p.loadAndAttach(opts, opts.Mode)
	case AttachAuto:
		err = p.loadAndAttach(opts, AttachTPBTF)
		if err != nil {
			p.fallback = err
			if err = p.loadAndAttach(opts, AttachRawTP); err != nil {
				err = fmt.Errorf("%w (after tp_btf failed: %v)", err, p.fallback)
			}
		}
	default:
		err = fmt.Errorf("unknown attach mode %q", opts.Mode)
	}
	if err != nil {
		lock.release()
		return nil, err
	}

	p.reader, err = ringbuf.NewReader(p.coll.Maps["events"])
	if err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("open ring buffer reader: %w", err)
	}
	p.reader.SetDeadline(time.Now().Add(p.poll))
	p.perCPU = make([]uint64, 0, 64)
	return p, nil
}

// modeObjects names, per attach mode, the programs to load; the other
// mode's are never created.
var modeObjects = map[AttachMode]struct {
	prog string
	// backup runs after prog on the same tracepoint and handles the state
	// changes the kernel kept prog from (see the program's comment).
	backup    string
	iterators []string
}{
	AttachTPBTF: {prog: "tcpconn_btf", backup: "tcpconn_btf_backup", iterators: []string{"tcpconn_report"}},
	AttachRawTP: {prog: "tcpconn_raw", backup: "tcpconn_raw_backup"},
}

func (p *Probe) loadAndAttach(opts Options, mode AttachMode) error {
	spec, err := loadTcpconn()
	if err != nil {
		return fmt.Errorf("parse embedded probe: %w", err)
	}
	names := modeObjects[mode]
	for name := range spec.Programs {
		if name != names.prog && name != names.backup && !slices.Contains(names.iterators, name) {
			delete(spec.Programs, name)
		}
	}
	spec.Maps["events"].MaxEntries = opts.RingBufferBytes
	if opts.handshakes > 0 {
		if err := shapeHandshakes(spec, opts.handshakes); err != nil {
			return err
		}
	}
	if err := spec.Variables["wakeup_bytes"].Set(opts.WakeupBytes); err != nil {
		return fmt.Errorf("set wakeup_bytes: %w", err)
	}
	var secret [8]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return fmt.Errorf("connection id secret: %w", err)
	}
	if err := spec.Variables["id_secret"].Set(binary.NativeEndian.Uint64(secret[:])); err != nil {
		return fmt.Errorf("set id_secret: %w", err)
	}

	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("load %s program: %w\n%+v", mode, err, verr)
		}
		return fmt.Errorf("load %s program: %w", mode, err)
	}
	// The probe first, then its backup: a tracepoint calls its programs in
	// the order they were attached.
	tp := "inet_sock_set_state"
	if opts.tracepoint != "" {
		tp = opts.tracepoint
	}
	links := make([]link.Link, 0, 2)
	attach := []string{names.prog, names.backup}
	switch {
	case opts.noAttach:
		attach = nil
	case opts.backupOnly:
		attach = attach[1:]
	case opts.NoBackup:
		attach = attach[:1]
	}
	for _, name := range attach {
		l, err := attachTracepoint(coll.Programs[name], mode, tp)
		if err != nil {
			_ = closeLinks(links)
			coll.Close()
			return fmt.Errorf("attach %s %s: %w", mode, tp, err)
		}
		links = append(links, l)
	}
	p.coll, p.links, p.mode = coll, links, mode
	if len(names.iterators) > 0 {
		p.iterErr = p.attachIterators()
	} else {
		p.iterErr = fmt.Errorf("%w: periodic reports need tp_btf mode", ErrNotSupported)
	}
	return nil
}

// attachTracepoint attaches one program to the state-change tracepoint
// (tp stands in for it in tests) the way mode attaches programs.
func attachTracepoint(prog *ebpf.Program, mode AttachMode, tp string) (link.Link, error) {
	if mode == AttachRawTP {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
	}
	return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
}

// closeLinks detaches in the reverse order of attaching: the backup first.
func closeLinks(links []link.Link) error {
	var errs []error
	for i := len(links) - 1; i >= 0; i-- {
		if err := links[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Mode reports the attach mode in use.
func (p *Probe) Mode() AttachMode { return p.mode }

// FallbackReason says why auto mode did not use tp_btf; nil if it did.
func (p *Probe) FallbackReason() error { return p.fallback }

// Read waits up to the poll interval for the next record and decodes it
// into rec. It returns ErrNoData when none arrived, ErrStopped once Stop was
// called and the ring buffer is drained, and never allocates per record.
func (p *Probe) Read(rec *Record) error {
	for {
		err := p.reader.ReadInto(&p.raw)
		switch {
		case err == nil:
			if p.dec.decode(p.raw.RawSample, rec) {
				return nil
			}
			continue // not a full record: never written by this probe
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The deadline only matters when the ring is empty: refresh it
			// here, not per record.
			p.reader.SetDeadline(time.Now().Add(p.poll))
			if p.stopped.Load() {
				return ErrStopped
			}
			return ErrNoData
		case errors.Is(err, ringbuf.ErrFlushed):
			if p.stopped.Load() {
				return ErrStopped
			}
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return ErrStopped
		default:
			return fmt.Errorf("read ring buffer: %w", err)
		}
	}
}

// Stop detaches the program, so no new records are produced, and wakes the
// reader: Read then returns what is left in the ring buffer, then ErrStopped.
func (p *Probe) Stop() error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.stopped.Load() {
		return nil
	}
	p.stopped.Store(true)
	var errs []error
	if err := closeLinks(p.links); err != nil {
		errs = append(errs, fmt.Errorf("detach inet_sock_set_state: %w", err))
	}
	p.links = nil
	if p.reader != nil {
		if err := p.reader.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("flush ring buffer: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close stops the probe and releases its maps and programs. Records not yet
// read are lost: call Stop and drain Read first.
func (p *Probe) Close() error {
	err := p.Stop()
	if p.reader != nil {
		err = errors.Join(err, p.reader.Close())
	}
	for _, it := range []*link.Iter{p.report} {
		if it != nil {
			err = errors.Join(err, it.Close())
		}
	}
	if p.coll != nil {
		p.coll.Close()
	}
	p.lock.release()
	p.lock = nil
	return err
}

// Stats reads the kernel-side counters.
func (p *Probe) Stats() (Stats, error) {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	// The program's skips first: each rescue is counted after its skip, so
	// a skip between the two reads cannot show as missed.
	ps, err := p.coll.Programs[modeObjects[p.mode].prog].Stats()
	if err != nil {
		return Stats{}, fmt.Errorf("read probe program stats: %w", err)
	}
	var s Stats
	var skippedNoRecord uint64
	for key, dst := range map[uint32]*uint64{
		statEmitted:  &s.Emitted,
		statDropped:  &s.Dropped,
		statNoState:  &s.NoState,
		statRescued:  &s.Rescued,
		statNoRecord: &skippedNoRecord,
	} {
		if err := p.coll.Maps["stats"].Lookup(key, &p.perCPU); err != nil {
			return Stats{}, fmt.Errorf("read probe stats: %w", err)
		}
		for _, v := range p.perCPU {
			*dst += v
		}
	}
	// What the backup took, or found to make no record, was not missed.
	// (The backup's own skips lose nothing: it is skipped only inside its
	// own run, after the probe ran.)
	s.Skipped = ps.RecursionMisses
	s.Missed = s.Skipped - min(s.Rescued+skippedNoRecord, s.Skipped)
	return s, nil
}

// Stat keys; the probe's TCPCONN_STAT_* constants.
const (
	statEmitted  uint32 = 0
	statDropped  uint32 = 1
	statNoState  uint32 = 2
	statRescued  uint32 = 3
	statNoRecord uint32 = 4
)

// bootToWallOffset measures what to add to CLOCK_BOOTTIME (the probe's
// clock) to get Unix time.
func bootToWallOffset() (int64, error) {
	var boot, wall unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return 0, fmt.Errorf("read CLOCK_BOOTTIME: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &wall); err != nil {
		return 0, fmt.Errorf("read CLOCK_REALTIME: %w", err)
	}
	return wall.Nano() - boot.Nano(), nil
}

// shapeHandshakes makes the probe's handshake table slots entries long: sets
// of up to four slots (the program's HANDSHAKE_WAYS), slots a power of two.
func shapeHandshakes(spec *ebpf.CollectionSpec, slots uint32) error {
	if slots&(slots-1) != 0 {
		return fmt.Errorf("handshake table of %d slots: not a power of two", slots)
	}
	ways := min(slots, 4)
	spec.Maps["connecting"].MaxEntries = slots
	if err := spec.Variables["handshake_ways"].Set(ways); err != nil {
		return fmt.Errorf("set handshake_ways: %w", err)
	}
	if err := spec.Variables["handshake_sets"].Set(slots / ways); err != nil {
		return fmt.Errorf("set handshake_sets: %w", err)
	}
	return nil
}
