package bpf

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// detach closes the probe's link of prog, as if the kernel kept prog from
// every run (a recursion miss), and returns what attaches it again in
// the same place.
func detach(t *testing.T, p *Probe, prog *ebpf.Program) (reattach func()) {
	t.Helper()
	info, err := prog.Info()
	require.NoError(t, err)
	id, ok := info.ID()
	require.True(t, ok, "program id")
	for i, l := range p.links {
		li, err := l.Info()
		if err != nil || li.Program != id { // err: a link this test closed
			continue
		}
		require.NoError(t, l.Close())
		return func() {
			t.Helper()
			l, err := attachBTF(prog)
			require.NoError(t, err)
			p.links[i] = l
		}
	}
	t.Fatalf("no link of program %d", id)
	return nil
}

// TestRetransmitsTypedAcrossMisses: the kernel skips a tracing program on
// a CPU where it already runs, so a retransmit in a softirq that
// interrupts the retransmit program goes unseen by it. One connection
// under 10 % loss both ways, its retransmit programs detached in turn as
// such skips would leave them: with the program's backup alone its
// retransmits by type still add up to TCP_INFO's total_retrans; with
// neither attached they fall behind; once they are back, the next
// retransmit types what was missed, and they add up again, in a walk and
// on both close records.
func TestRetransmitsTypedAcrossMisses(t *testing.T) {
	const chunk = 64 << 10
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP })
	l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, 9310).String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	c, err := pair.Client.Dial(t.Context(), netip.AddrPortFrom(pair.ServerIP, 9310).String())
	require.NoError(t, err)
	defer c.Close()
	s, err := l.Accept()
	require.NoError(t, err)
	defer s.Close()
	port := uint16(c.LocalAddr().(*net.TCPAddr).Port)

	totals := func() (cl, sv uint64) {
		ci, err := tcpInfo(c)
		require.NoError(t, err)
		si, err := tcpInfo(s)
		require.NoError(t, err)
		return uint64(ci.Total_retrans), uint64(si.Total_retrans)
	}
	typed := func() (cl, sv uint64) {
		_, err := p.Walk(func(r *Record) {
			switch {
			case r.LocalAddr == pair.ClientIP && r.LocalPort == port:
				cl = sumByType(r)
			case r.LocalAddr == pair.ServerIP && r.PeerPort == port:
				sv = sumByType(r)
			}
		})
		require.NoError(t, err)
		return cl, sv
	}
	// retransmit exchanges under loss until both ends retransmitted,
	// then lifts the loss and waits until everything is acknowledged.
	retransmit := func(what string) {
		t.Helper()
		rules := []*netnstest.NS{pair.Client, pair.Server}
		for _, ns := range rules {
			iptables(t, ns, "-A", "INPUT", "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP")
		}
		cl0, sv0 := totals()
		for deadline := time.Now().Add(time.Minute); ; {
			done := make(chan error, 1)
			go func() { done <- netnstest.Answer(s, chunk, chunk) }()
			require.NoError(t, netnstest.Ask(c, chunk, chunk))
			require.NoError(t, <-done)
			if cl, sv := totals(); cl > cl0 && sv > sv0 {
				break
			}
			require.True(t, time.Now().Before(deadline), "%s: both ends retransmit within a minute", what)
		}
		for _, ns := range rules {
			iptables(t, ns, "-D", "INPUT", "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.1", "-j", "DROP")
		}
		_, err := settledInfo(c)
		require.NoError(t, err)
		_, err = settledInfo(s)
		require.NoError(t, err)
	}

	retransmit("both programs")
	cl, sv := totals()
	tcl, tsv := typed()
	assert.Equal(t, [2]uint64{cl, sv}, [2]uint64{tcl, tsv}, "both programs: typed as TCP_INFO counts")

	reattach := detach(t, p, p.objs.retransmit)
	retransmit("the backup alone")
	cl, sv = totals()
	tcl, tsv = typed()
	assert.Equal(t, [2]uint64{cl, sv}, [2]uint64{tcl, tsv}, "the backup alone types what the program was kept from")

	reattachBackup := detach(t, p, p.objs.retransmitBackup)
	retransmit("neither program")
	cl, sv = totals()
	tcl, tsv = typed()
	require.Less(t, tcl, cl, "the client's retransmits while neither program ran are not typed yet")
	require.Less(t, tsv, sv, "the server's retransmits while neither program ran are not typed yet")
	t.Logf("neither program: TCP_INFO %d and %d, typed %d and %d", cl, sv, tcl, tsv)

	// Both back (the backup too: a recursion miss of the program on the
	// last retransmit would otherwise leave it untyped here).
	reattach()
	reattachBackup()
	retransmit("both programs back")
	cl, sv = totals()
	tcl, tsv = typed()
	assert.Equal(t, [2]uint64{cl, sv}, [2]uint64{tcl, tsv}, "the next retransmit types those missed")

	require.NoError(t, c.Close())
	require.NoError(t, s.Close())
	recs := col.waitFor(t, "both close records", func(rs []Record) bool {
		return findRecord(rs, KindClose, pair.ClientIP, func(r *Record) bool { return r.LocalPort == port }) != nil &&
			findRecord(rs, KindClose, pair.ServerIP, func(r *Record) bool { return r.PeerPort == port }) != nil
	})
	rcl := findRecord(recs, KindClose, pair.ClientIP, func(r *Record) bool { return r.LocalPort == port })
	rsv := findRecord(recs, KindClose, pair.ServerIP, func(r *Record) bool { return r.PeerPort == port })
	assert.Equal(t, rcl.Retransmits, sumByType(rcl), "client close record: %v", rcl.RetransmitsByType)
	assert.Equal(t, rsv.Retransmits, sumByType(rsv), "server close record: %v", rsv.RetransmitsByType)
	assert.Equal(t, cl, rcl.Retransmits, "client close record: TCP_INFO's total")
	assert.Equal(t, sv, rsv.Retransmits, "server close record: TCP_INFO's total")
}
