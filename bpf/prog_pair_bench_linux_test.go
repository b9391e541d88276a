package bpf

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/tcpconn/tcpconn/internal/netnstest"
	"github.com/tcpconn/tcpconn/internal/pairstat"
)

// Knobs of BenchmarkProgramAgainstBase, e.g.
// go test ./bpf -run '^$' -bench ProgramAgainstBase -benchtime 1x -v -args -prog.rounds=20 -prog.storms=close
var (
	progBase   = flag.String("prog.base", "e6c6f82", "the git revision whose probe (bpf/tcpconn.bpf.c) this build is measured against; the default is issue 17's branch point")
	progRounds = flag.Int("prog.rounds", 10, "rounds, each loading both builds in turn (the first alternating) for each storm")
	progConns  = flag.Int("prog.conns", 4000, "connections per storm")
	progStorms = flag.String("prog.storms", "close,reset,refused,loss", "storms to run: close (the client closes, FINs), reset (the client closes with SO_LINGER 0), refused (connects to a closed port), loss (a 100-byte request and a 1-byte answer, each request dropped once)")
)

// BenchmarkProgramAgainstBase measures what this build's programs cost
// per connection against another build's (-prog.base, by default the
// probe before issue 17: no exact bytes, close cause, connection uid,
// retransmits by type, refused connects, nor the tcp_send_reset and
// tcp_retransmit_skb programs), by the kernel's own accounting (bpf_stats
// run time of every attached program, divided by the storm's
// connections). The base is compiled from that revision's source with the
// flags of gen.go (needs git and clang-19). Each round loads one build,
// runs a storm, unloads it, then the other, the first alternating from
// round to round; it reports the median of the paired differences and its
// 95 % interval (pairstat), over the rounds other work on the machine did
// not disturb (pairedRounds). `sudo make bench-prog-pair`.
func BenchmarkProgramAgainstBase(b *testing.B) {
	netnstest.RequireRoot(b)
	base := buildBase(b, *progBase)
	pair := netnstest.NewPair(b, 208)
	pair.Client.Exec(b, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable bpf_stats: %v", err)
	}
	defer stats.Close()

	var table strings.Builder
	fmt.Fprintf(&table, "| storm | rounds kept | base ns/conn | this build ns/conn | added ns/conn | 95 %% interval | of it the state programs | 95 %% interval | tcp_send_reset | tcp_retransmit_skb | state programs: runs/conn, ns/run base, this |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, storm := range strings.Split(*progStorms, ",") {
		run := newStorm(b, pair, storm, 9400+i)
		rounds := pairedRounds(b, base, storm, run)
		var baseNs, thisNs, added, stateAdded, resetNs, retransNs, runs, baseRun, thisRun []float64
		for _, r := range rounds {
			n := float64(*progConns)
			baseNs, thisNs = append(baseNs, r.base.total()/n), append(thisNs, r.this.total()/n)
			added = append(added, (r.this.total()-r.base.total())/n)
			stateAdded = append(stateAdded, (r.this.ns["state"]-r.base.ns["state"])/n)
			resetNs, retransNs = append(resetNs, r.this.ns["reset"]/n), append(retransNs, r.this.ns["retransmit"]/n)
			runs = append(runs, r.this.runs["state"]/n)
			baseRun, thisRun = append(baseRun, r.base.ns["state"]/r.base.runs["state"]), append(thisRun, r.this.ns["state"]/r.this.runs["state"])
		}
		lo, hi := pairstat.MedianInterval(added)
		slo, shi := pairstat.MedianInterval(stateAdded)
		fmt.Fprintf(&table, "| %s | %d | %.0f | %.0f | %.0f | %.0f to %.0f | %.0f | %.0f to %.0f | %.0f | %.0f | %.1f: %.0f, %.0f |\n", storm, len(rounds),
			pairstat.Median(baseNs), pairstat.Median(thisNs), pairstat.Median(added), lo, hi, pairstat.Median(stateAdded), slo, shi,
			pairstat.Median(resetNs), pairstat.Median(retransNs), pairstat.Median(runs), pairstat.Median(baseRun), pairstat.Median(thisRun))
		b.ReportMetric(pairstat.Median(added), storm+"-added-ns/conn")
	}
	b.Logf("%d rounds of %d connections per storm, against %s; medians, paired per round:\n%s", *progRounds, *progConns, *progBase, table.String())
}

// pairedRound is one round of a storm: the cost of each build.
type pairedRound struct{ base, this progCost }

// pairedRounds runs -prog.rounds rounds of storm that other work on the
// machine left alone, and returns them. A round is kept when neither
// build's state-change programs ran more than 1 % more often per
// connection than the least seen in this storm (the storm's own state
// changes: its connections are all alike): a storm somewhere else on the
// node runs them too, and its runs would count as this storm's. It gives
// up after three times as many rounds.
func pairedRounds(b *testing.B, base, storm string, run func() error) []pairedRound {
	var all []pairedRound
	least := math.Inf(1)
	clean := func(r pairedRound) bool {
		return max(r.base.runs["state"], r.this.runs["state"]) <= least*1.01
	}
	kept := 0
	for round := 0; kept < *progRounds && round < 3**progRounds; round++ {
		var r pairedRound
		if round%2 == 0 {
			r.base, r.this = measureBase(b, base, run), measureThis(b, run)
		} else {
			r.this, r.base = measureThis(b, run), measureBase(b, base, run)
		}
		least = min(least, r.base.runs["state"], r.this.runs["state"])
		all = append(all, r)
		kept = 0
		for _, r := range all {
			if clean(r) {
				kept++
			}
		}
		n := float64(*progConns)
		b.Logf("%s round %d: base %.0f, this %.0f ns/conn (state programs %.0f in %.2f runs/conn, base's in %.2f; reset %.0f in %.2f runs/conn, retransmit %.0f in %.2f runs/conn), clean %v",
			storm, round+1, r.base.total()/n, r.this.total()/n, r.this.ns["state"]/n, r.this.runs["state"]/n, r.base.runs["state"]/n,
			r.this.ns["reset"]/n, r.this.runs["reset"]/n, r.this.ns["retransmit"]/n, r.this.runs["retransmit"]/n, clean(r))
	}
	var out []pairedRound
	for _, r := range all {
		if clean(r) {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		b.Fatalf("%s: no round without other work running the programs", storm)
	}
	return out
}

// progCost is the run time (ns) and run count of a build's programs over
// one storm, by role: state (the state-change program and its backup),
// reset, retransmit.
type progCost struct{ ns, runs map[string]float64 }

func (c progCost) total() (ns float64) {
	for _, v := range c.ns {
		ns += v
	}
	return ns
}

// measure runs storm with the programs by role attached and returns their
// cost over it.
func measure(b *testing.B, progs map[string][]*ebpf.Program, storm func() error) progCost {
	before := progCost{map[string]float64{}, map[string]float64{}}
	read := func(c progCost) {
		for role, ps := range progs {
			for _, p := range ps {
				st, err := p.Stats()
				if err != nil {
					b.Fatal(err)
				}
				c.ns[role] += float64(st.Runtime.Nanoseconds())
				c.runs[role] += float64(st.RunCount)
			}
		}
	}
	read(before)
	if err := storm(); err != nil {
		b.Fatal(err)
	}
	after := progCost{map[string]float64{}, map[string]float64{}}
	read(after)
	for role := range after.ns {
		after.ns[role] -= before.ns[role]
		after.runs[role] -= before.runs[role]
	}
	return after
}

// measureThis loads this build as the receiver does (tp_btf) and measures
// its programs over one storm.
func measureThis(b *testing.B, storm func() error) progCost {
	p, unload := loadDrained(b, Options{Mode: AttachTPBTF})
	defer unload()
	return measure(b, map[string][]*ebpf.Program{
		"state": {p.objs.prog, p.objs.backup}, "reset": {p.objs.reset}, "retransmit": {p.objs.retransmit, p.objs.retransmitBackup},
	}, storm)
}

// measureBase loads the base build's state-change program and its backup
// (the programs of its tp_btf mode) as its loader did, with this build's
// defaults for the ring buffer, and measures them over one storm.
func measureBase(b *testing.B, object string, storm func() error) progCost {
	spec, err := ebpf.LoadCollectionSpec(object)
	if err != nil {
		b.Fatal(err)
	}
	names := []string{"tcpconn_btf", "tcpconn_btf_backup"}
	for name := range spec.Programs {
		if name != names[0] && name != names[1] {
			delete(spec.Programs, name)
		}
	}
	spec.Maps["events"].MaxEntries = DefaultRingBufferBytes
	if err := spec.Variables["wakeup_bytes"].Set(uint64(DefaultRingBufferBytes / WakeupFraction)); err != nil {
		b.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatalf("load the base build: %v", err)
	}
	defer coll.Close()
	var progs []*ebpf.Program
	for _, name := range names { // the probe first, then its backup
		l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[name], AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			b.Fatalf("attach the base build's %s: %v", name, err)
		}
		defer l.Close()
		progs = append(progs, coll.Programs[name])
	}
	rd, err := ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		b.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		// As Probe.Read: a deadline of DefaultPollInterval when the ring
		// is empty.
		defer close(drained)
		var rec ringbuf.Record
		for {
			rd.SetDeadline(time.Now().Add(DefaultPollInterval))
			if err := rd.ReadInto(&rec); errors.Is(err, ringbuf.ErrClosed) {
				return
			}
		}
	}()
	defer func() { rd.Close(); <-drained }()
	return measure(b, map[string][]*ebpf.Program{"state": progs}, storm)
}

// buildBase compiles the probe of revision rev as gen.go compiles this
// one and returns the object's path.
func buildBase(b *testing.B, rev string) string {
	for _, tool := range []string{"git", "clang-19"} {
		if _, err := exec.LookPath(tool); err != nil {
			netnstest.Unavailable(b, tool+", to build the base probe")
		}
	}
	dir := b.TempDir()
	for _, f := range []string{"tcpconn.bpf.c", "tcpconn.h", "vmlinux.h"} {
		src, err := exec.Command("git", "show", rev+":bpf/"+f).Output()
		if err != nil {
			b.Fatalf("git show %s:bpf/%s: %v", rev, f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), src, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	obj := filepath.Join(dir, "base.o")
	cmd := exec.Command("clang-19", "-O2", "-g", "-Wall", "-Werror", "-target", "bpfel", "-I.", "-c", "tcpconn.bpf.c", "-o", obj)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the probe of %s: %v\n%s", rev, err, out)
	}
	return obj
}

// newStorm prepares one kind of storm on port and returns it: each call
// makes -prog.conns connections from the pair's client to its server, and
// returns once the server has closed them all (so that no state change
// of a storm falls into the next one's measurement).
func newStorm(b *testing.B, pair *netnstest.Pair, kind string, port int) func() error {
	const request = 100
	target := netip.AddrPortFrom(pair.ServerIP, uint16(port)).String()
	switch kind {
	case "close":
		return stormOf(b, pair, port, 1, func(c net.Conn) error { return c.Close() }, nil)
	case "reset":
		return stormOf(b, pair, port, 1, func(c net.Conn) error {
			if err := c.(*net.TCPConn).SetLinger(0); err != nil {
				return err
			}
			return c.Close()
		}, nil)
	case "refused":
		return func() error {
			return pair.Client.Do(func() error {
				for range *progConns {
					if c, err := net.Dial("tcp", target); err == nil {
						c.Close()
						return errors.New("a connect to a closed port succeeded")
					}
				}
				return nil
			})
		}
	case "loss":
		// The request is the only segment of a connection with 100
		// bytes of payload: an IPv4 packet of 152 bytes (20 IP, 32 TCP
		// with timestamps). Every other one is dropped, which is each
		// request once (its retransmit passes).
		pair.Server.Exec(b, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(port), "-m", "length", "--length", "152",
			"-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DROP")
		// The retransmit is a tail loss probe, after twice the RTT and
		// the route's minimum RTO: 5 ms rather than 200, or the storm
		// would wait for its timers.
		pair.Client.Exec(b, "ip", "route", "replace", netip.PrefixFrom(pair.ServerIP, 24).Masked().String(), "dev", pair.ClientDev, "rto_min", "5ms")
		return stormOf(b, pair, port, 16, func(c net.Conn) error {
			buf := make([]byte, request)
			_, err := c.Write(buf)
			if err == nil {
				_, err = io.ReadFull(c, buf[:1])
			}
			return errors.Join(err, c.Close())
		}, func(c net.Conn) {
			if _, err := io.ReadFull(c, make([]byte, request)); err == nil {
				_, _ = c.Write([]byte{1})
			}
		})
	}
	b.Fatalf("unknown storm %q (close, reset, refused, loss)", kind)
	return nil
}

// stormOf serves port in the pair's server namespace (answer, if set,
// before reading to the end and closing) and returns a storm of
// -prog.conns connections from clients side by side, each of which goes
// through client.
func stormOf(b *testing.B, pair *netnstest.Pair, port, clients int, client func(net.Conn) error, answer func(net.Conn)) func() error {
	l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, uint16(port)).String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	var served atomic.Int64
	serve(l, func(c net.Conn) {
		if answer != nil {
			answer(c)
		}
		_, _ = io.Copy(io.Discard, c)
		c.Close()
		served.Add(1)
	})
	target := l.Addr().String()
	return func() error {
		from := served.Load()
		var wg sync.WaitGroup
		errs := make([]error, clients)
		for i := range clients {
			wg.Go(func() {
				errs[i] = pair.Client.Do(func() error {
					for range *progConns / clients {
						c, err := net.Dial("tcp", target)
						if err != nil {
							return err
						}
						if err := client(c); err != nil {
							return err
						}
					}
					return nil
				})
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		for deadline := time.Now().Add(30 * time.Second); served.Load()-from < int64(*progConns/clients*clients); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("the server closed %d of %d connections", served.Load()-from, *progConns)
			}
		}
		time.Sleep(10 * time.Millisecond) // the server's FINs reach the clients
		return nil
	}
}
