//go:build linux

package bpf

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Probe is the loaded and attached eBPF program and its ring buffer reader.
// Read is for one goroutine; Stop, Stats and Close may be called from any.
// A walk (Walk, WalkStart, then Listen and Backlogs) is for one goroutine
// at a time, which may be another than Read's while Read runs: the two
// share nothing but the decoder, which only reads.
type Probe struct {
	mode   AttachMode
	objs   probeObjects
	links  []link.Link
	reader *ringbuf.Reader
	raw    ringbuf.Record
	dec    decoder
	// waiter is where Read waits for records, until deadline: the reader's
	// own deadline stays in the past, so that it never blocks.
	waiter   *ringWait
	deadline time.Time
	poll     time.Duration
	noWait   bool // ReadNow read without waiting; Read sets the deadline back
	stopped  atomic.Bool
	stopMu   sync.Mutex
	statsMu  sync.Mutex
	perCPU   []uint64
	// fallback is why tp_btf was not used in auto mode.
	fallback error

	report  *link.Iter
	iterErr error
	// reportTracked walks the tracked table; nil where the kernel cannot
	// (Walk then runs report in each namespace).
	reportTracked *link.Iter
	// untracked: Stats.Untracked when the last walk began; walkedNetns:
	// whether a walk ran report in each namespace, lastPerNetns whether
	// the last did.
	untracked    uint64
	walkedNetns  bool
	lastPerNetns bool
	diagBuf      []byte
	netns        netnsFinder // the walk's
	lock         *nodeLock
	walkBuf      []byte
	walkRec      Record
	// listen: each namespace's listener counters, as the last walk read
	// them; listenErr what it failed to read.
	listen    []ListenStats
	listenErr error
	// backlogs: the listening sockets' accept queues the last walk saw.
	backlogs []Backlog
	// walkSkipped: the namespaces the last walk found without a TCP
	// socket, and did not run the iterator in.
	walkSkipped []uint32
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

	p.reader, err = ringbuf.NewReader(p.objs.Events)
	if err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("open ring buffer reader: %w", err)
	}
	p.reader.SetDeadline(time.Unix(0, 1))
	p.waiter, err = newRingWait(p.objs.Events, p.stopped.Load)
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	p.deadline = time.Now().Add(p.poll)
	p.perCPU = make([]uint64, 0, 64)
	return p, nil
}

// modeObjects names, per attach mode, the programs to load (bpf2go's name
// constants); the other mode's are never created.
var modeObjects = map[AttachMode]struct {
	prog string
	// backup runs after prog on the same tracepoint and handles the state
	// changes the kernel kept prog from (see the program's comment).
	backup string
	// report is the walk's iterator of each namespace's sockets; none in
	// raw_tp mode. reportTracked walks the tracked table; left out where
	// the kernel has no bpf_rdonly_cast.
	report, reportTracked string
	// reset marks sockets that send a reset while open (tcp_send_reset),
	// for their close record; none in raw_tp mode (no sk_storage there).
	reset string
	// retransmit counts each socket's retransmits by type
	// (tcp_retransmit_skb), for its records; retransmitBackup, attached
	// after it, types those the kernel kept it from. None in raw_tp mode.
	retransmit, retransmitBackup string
}{
	AttachTPBTF: {prog: tcpconnProgTcpconnBtf, backup: tcpconnProgTcpconnBtfBackup, report: tcpconnProgTcpconnReport, reportTracked: tcpconnProgTcpconnReportTracked, reset: tcpconnProgTcpconnReset, retransmit: tcpconnProgTcpconnRetransmit, retransmitBackup: tcpconnProgTcpconnRetransmitBackup},
	AttachRawTP: {prog: tcpconnProgTcpconnRaw, backup: tcpconnProgTcpconnRawBackup},
}

// probeObjects is the loaded probe: every map, and the programs of one
// attach mode, named as in modeObjects.
type probeObjects struct {
	tcpconnMaps
	prog, backup                 *ebpf.Program
	report                       *ebpf.Program // nil in raw_tp mode
	reportTracked                *ebpf.Program // nil in raw_tp mode and before Linux 6.4
	reset                        *ebpf.Program // nil in raw_tp mode
	retransmit, retransmitBackup *ebpf.Program // nil in raw_tp mode
}

func (o *probeObjects) Close() error {
	return errors.Join(o.tcpconnMaps.Close(), o.prog.Close(), o.backup.Close(), o.report.Close(), o.reportTracked.Close(), o.reset.Close(), o.retransmit.Close(), o.retransmitBackup.Close())
}

func (p *Probe) loadAndAttach(opts Options, mode AttachMode) error {
	spec, err := loadTcpconn()
	if err != nil {
		return fmt.Errorf("parse embedded probe: %w", err)
	}
	var specs tcpconnSpecs
	if err := spec.Assign(&specs); err != nil {
		return fmt.Errorf("parse embedded probe: %w", err)
	}
	names := modeObjects[mode]
	// The kernel's BTF, parsed once (about 10 ms) for the choices below;
	// nil, they take the programs older kernels have.
	var kernel *btf.Spec
	if names.retransmit != "" || names.reportTracked != "" {
		kernel, _ = btf.LoadKernelSpec()
	}
	if names.retransmit != "" && !retransmitHasErr(kernel) {
		names.retransmit, names.retransmitBackup = tcpconnProgTcpconnRetransmitSent, tcpconnProgTcpconnRetransmitSentBackup
	}
	if names.reportTracked != "" && (opts.noTrackedWalk || !kernelHasFunc(kernel, "bpf_rdonly_cast") || !kernelHasFunc(kernel, "bpf_iter_num_new")) {
		names.reportTracked = ""
	}
	for name := range spec.Programs {
		if name != names.prog && name != names.backup && name != names.report && name != names.reportTracked && name != names.reset && name != names.retransmit && name != names.retransmitBackup {
			delete(spec.Programs, name)
		}
	}
	specs.Events.MaxEntries = opts.RingBufferBytes
	if opts.handshakes > 0 {
		if err := shapeHandshakes(&specs, opts.handshakes); err != nil {
			return err
		}
	}
	if opts.TrackedSockets > 0 {
		if err := shapeTracked(&specs, opts.TrackedSockets); err != nil {
			return err
		}
	}
	if err := specs.WakeupBytes.Set(opts.WakeupBytes); err != nil {
		return fmt.Errorf("set wakeup_bytes: %w", err)
	}
	var secret [8]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return fmt.Errorf("connection id secret: %w", err)
	}
	if err := specs.IdSecret.Set(binary.NativeEndian.Uint64(secret[:])); err != nil {
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
	var objs probeObjects
	if err := coll.Assign(&objs.tcpconnMaps); err != nil {
		coll.Close()
		return fmt.Errorf("load %s program: %w", mode, err)
	}
	objs.prog = coll.DetachProgram(names.prog)
	objs.backup = coll.DetachProgram(names.backup)
	objs.report = coll.DetachProgram(names.report)
	objs.reportTracked = coll.DetachProgram(names.reportTracked)
	objs.reset = coll.DetachProgram(names.reset)
	objs.retransmit = coll.DetachProgram(names.retransmit)
	objs.retransmitBackup = coll.DetachProgram(names.retransmitBackup)
	// What is left, the maps of the globals, stays with the programs.
	coll.Close()

	// The probe first, then its backup: a tracepoint calls its programs in
	// the order they were attached.
	tp := "inet_sock_set_state"
	if opts.tracepoint != "" {
		tp = opts.tracepoint
	}
	attach := []*ebpf.Program{objs.prog, objs.backup}
	switch {
	case opts.noAttach:
		attach = nil
	case opts.backupOnly:
		attach = attach[1:]
	case opts.NoBackup:
		attach = attach[:1]
	}
	links, err := attachInOrder(func(prog *ebpf.Program) (link.Link, error) { return attachTracepoint(prog, mode, tp) }, attach...)
	if err != nil {
		_ = objs.Close()
		return fmt.Errorf("attach %s %s: %w", mode, tp, err)
	}
	// The tp_btf programs of other tracepoints go before the state-change
	// programs, so that they are detached last: tcp_send_reset's, and
	// tcp_retransmit_skb's with its backup after it.
	for _, other := range []struct {
		tracepoint string
		progs      []*ebpf.Program
	}{
		{"tcp_send_reset", []*ebpf.Program{objs.reset}},
		{"tcp_retransmit_skb", []*ebpf.Program{objs.retransmit, objs.retransmitBackup}},
	} {
		if other.progs[0] == nil || opts.noAttach {
			continue
		}
		l, err := attachInOrder(attachBTF, other.progs...)
		if err != nil {
			_ = closeLinks(links)
			_ = objs.Close()
			return fmt.Errorf("attach %s %s: %w", mode, other.tracepoint, err)
		}
		links = append(l, links...)
	}
	p.objs, p.links, p.mode = objs, links, mode
	if objs.report != nil {
		p.iterErr = p.attachIterators()
	} else {
		p.iterErr = fmt.Errorf("%w: periodic reports need tp_btf mode", ErrNotSupported)
	}
	return nil
}

// attachInOrder attaches progs with attach, in order: a tracepoint calls
// its programs in the order they were attached. On a failure it detaches
// those it attached.
func attachInOrder(attach func(*ebpf.Program) (link.Link, error), progs ...*ebpf.Program) ([]link.Link, error) {
	links := make([]link.Link, 0, len(progs))
	for _, prog := range progs {
		l, err := attach(prog)
		if err != nil {
			return nil, errors.Join(err, closeLinks(links))
		}
		links = append(links, l)
	}
	return links, nil
}

// attachBTF attaches a tp_btf program to the tracepoint its section names.
func attachBTF(prog *ebpf.Program) (link.Link, error) {
	return link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
}

// retransmitHasErr says whether the kernel's tcp_retransmit_skb
// tracepoint passes the retransmit's error (and fires on failures too):
// its btf_trace_ typedef has the sk, skb, err arguments after the context.
// kernel is the kernel's BTF (nil: unknown, false).
func retransmitHasErr(kernel *btf.Spec) bool {
	if kernel == nil {
		return false
	}
	var td *btf.Typedef
	if err := kernel.TypeByName("btf_trace_tcp_retransmit_skb", &td); err != nil {
		return false
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return false
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	return ok && len(proto.Params) == 4
}

// kernelHasFunc says whether the kernel's BTF (nil: unknown) has the
// function (a kfunc the probe may call).
func kernelHasFunc(kernel *btf.Spec, name string) bool {
	if kernel == nil {
		return false
	}
	var fn *btf.Func
	return kernel.TypeByName(name, &fn) == nil
}

// attachTracepoint attaches one program to the state-change tracepoint
// (tp stands in for it in tests) the way mode attaches programs.
func attachTracepoint(prog *ebpf.Program, mode AttachMode, tp string) (link.Link, error) {
	if mode == AttachRawTP {
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
	}
	return attachBTF(prog)
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
	if p.noWait {
		p.noWait = false
		p.deadline = time.Now().Add(p.poll)
	}
	return p.read(rec, true)
}

// ReadNow is Read without the wait: ErrNoData at once when the ring buffer
// holds no record. The reader drains the ring buffer with it between the
// batches of a walk that runs on another goroutine, where waiting for the
// poll deadline would hold the walk up. Once Stop was called it returns
// ErrStopped at once, and Read delivers what is left. Like Read, it is for
// the reader's goroutine, and allocates nothing per record.
func (p *Probe) ReadNow(rec *Record) error {
	if p.stopped.Load() {
		return ErrStopped
	}
	if p.reader.AvailableBytes() == 0 {
		return ErrNoData
	}
	p.noWait = true
	return p.read(rec, false)
}

// read reads the next record; with wait, an empty ring buffer is waited
// on until the deadline (records below wakeup_bytes come without a
// wakeup: the deadline reads them).
func (p *Probe) read(rec *Record, wait bool) error {
	for {
		err := p.reader.ReadInto(&p.raw) // never blocks: its deadline is past
		switch {
		case err == nil:
			if p.dec.decode(p.raw.RawSample, rec) {
				return nil
			}
			continue // not a full record: never written by this probe
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The ring buffer is empty: once the probe stopped, drained.
			if p.stopped.Load() {
				return ErrStopped
			}
			if wait && time.Now().Before(p.deadline) {
				ready, err := p.waiter.wait(p.deadline)
				if err != nil && p.stopped.Load() {
					return ErrStopped // Close while Read waited
				}
				if err != nil {
					return fmt.Errorf("wait for the ring buffer: %w", err)
				}
				// At the deadline, or woken by Stop: read once more what
				// came meanwhile below wakeup_bytes, without waiting.
				wait = ready
				continue
			}
			// The deadline only matters when the ring is empty: refresh it
			// here, not per record.
			p.noWait = false
			p.deadline = time.Now().Add(p.poll)
			return ErrNoData
		case errors.Is(err, ringbuf.ErrClosed):
			return ErrStopped
		default:
			return fmt.Errorf("read ring buffer: %w", err)
		}
	}
}

// SetPollInterval changes how long Read waits for a record when the ring
// buffer is empty, from now on: the reader backs off while the node is
// idle and polls at PollInterval again when records come. Records past
// WakeupBytes wake the reader whatever it is. Call it from the reader's
// goroutine, between Reads.
func (p *Probe) SetPollInterval(d time.Duration) {
	if d <= 0 || d == p.poll {
		return
	}
	p.poll = d
	p.noWait = false
	p.deadline = time.Now().Add(d)
}

// Stop detaches the program, so no new records are produced, and wakes the
// reader: Read then returns what is left in the ring buffer, then ErrStopped.
func (p *Probe) Stop() error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.stopped.Load() {
		return nil
	}
	var errs []error
	if err := closeLinks(p.links); err != nil {
		errs = append(errs, fmt.Errorf("detach inet_sock_set_state: %w", err))
	}
	p.links = nil
	// Stopped only once detached: a reader that then finds the ring buffer
	// empty has read every record (one produced while the programs were
	// being detached is not left behind).
	p.stopped.Store(true)
	if p.waiter != nil {
		if err := p.waiter.wake(); err != nil {
			errs = append(errs, fmt.Errorf("wake the ring buffer's reader: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Close stops the probe and releases its maps and programs. Records not yet
// read are lost: call Stop and drain Read first.
func (p *Probe) Close() error {
	err := p.Stop()
	if p.waiter != nil {
		err = errors.Join(err, p.waiter.close())
	}
	if p.reader != nil {
		err = errors.Join(err, p.reader.Close())
	}
	for _, it := range []*link.Iter{p.report, p.reportTracked} {
		if it != nil {
			err = errors.Join(err, it.Close())
		}
	}
	err = errors.Join(err, p.objs.Close())
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
	ps, err := p.objs.prog.Stats()
	if err != nil {
		return Stats{}, fmt.Errorf("read probe program stats: %w", err)
	}
	var s Stats
	var skippedNoRecord uint64
	for key, dst := range statCounters(&s, &skippedNoRecord) {
		if *dst, err = p.sumStat(uint32(key)); err != nil {
			return Stats{}, err
		}
	}
	// What the backup took, or found to make no record, was not missed.
	// (The backup's own skips lose nothing: it is skipped only inside its
	// own run, after the probe ran.)
	s.Skipped = ps.RecursionMisses
	s.Missed = s.Skipped - min(s.Rescued+skippedNoRecord, s.Skipped)
	return s, nil
}

// stat reads one of the probe's counters.
func (p *Probe) stat(key uint32) (uint64, error) {
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	return p.sumStat(key)
}

// sumStat sums a counter over the CPUs; statsMu held.
func (p *Probe) sumStat(key uint32) (uint64, error) {
	if err := p.objs.Stats.Lookup(key, &p.perCPU); err != nil {
		return 0, fmt.Errorf("read probe stats: %w", err)
	}
	var n uint64
	for _, v := range p.perCPU {
		n += v
	}
	return n, nil
}

// Refused calls fn with every local address's count of refused connects
// (tp_btf mode: in raw_tp mode there are none). At most
// TCPCONN_REFUSED_KEYS addresses are kept, the least recently refusing
// dropped first. It allocates nothing per address.
func (p *Probe) Refused(fn func(Refused)) error {
	var k tcpconnTcpconnRefusedKey
	var n uint64
	it := p.objs.Refused.Iterate()
	for it.Next(&k, &n) {
		r := Refused{NetNS: k.NetnsIno, Count: n}
		switch uint16(k.Family) {
		case afInet:
			r.Local = netip.AddrFrom4([4]byte(k.Addr[:4]))
		case afInet6:
			r.Local = netip.AddrFrom16(k.Addr).Unmap()
		default:
			continue
		}
		fn(r)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read refused connects: %w", err)
	}
	return nil
}

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
// of up to the program's TCPCONN_HANDSHAKE_WAYS slots, slots a power of two.
func shapeHandshakes(specs *tcpconnSpecs, slots uint32) error {
	return shapeTable("handshake", specs.Connecting, specs.HandshakeSets, specs.HandshakeWays, slots, uint32(tcpconnTcpconnGeometryTCPCONN_HANDSHAKE_WAYS))
}

// shapeTracked does the same for the tracked table, and sizes the walk's
// chunks of it.
func shapeTracked(specs *tcpconnSpecs, slots uint32) error {
	specs.TrackedChunks.MaxEntries = max(1, slots/uint32(tcpconnTcpconnGeometryTCPCONN_TRACKED_CHUNK))
	specs.TrackedTypes.MaxEntries = slots
	return shapeTable("tracked", specs.Tracked, specs.TrackedSets, specs.TrackedWays, slots, uint32(tcpconnTcpconnGeometryTCPCONN_TRACKED_WAYS))
}

// shapeTable makes a set-associative table of the probe slots entries long:
// sets of up to maxWays slots, slots a power of two.
func shapeTable(name string, m *ebpf.MapSpec, sets, ways *ebpf.VariableSpec, slots, maxWays uint32) error {
	if slots&(slots-1) != 0 {
		return fmt.Errorf("%s table of %d slots: not a power of two", name, slots)
	}
	w := min(slots, maxWays)
	m.MaxEntries = slots
	if err := ways.Set(w); err != nil {
		return fmt.Errorf("set %s_ways: %w", name, err)
	}
	if err := sets.Set(slots / w); err != nil {
		return fmt.Errorf("set %s_sets: %w", name, err)
	}
	return nil
}
