package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// dropped is how many packets ns's first DROP rule in chain dropped.
func dropped(t *testing.T, ns *netnstest.NS, chain string) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns.Name, "iptables", "-nvxL", chain).CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "DROP" {
			n, err := strconv.ParseUint(f[0], 10, 64)
			require.NoError(t, err, line)
			return n
		}
	}
	t.Fatalf("no DROP rule in %s: %s", chain, out)
	return 0
}

func sumByType(r *Record) uint64 {
	var n uint64
	for _, c := range r.RetransmitsByType {
		n += uint64(c)
	}
	return n
}

func findRecord(rs []Record, kind Kind, local netip.Addr, match func(*Record) bool) *Record {
	for i := range rs {
		if rs[i].Kind == kind && rs[i].LocalAddr == local && match(&rs[i]) {
			return &rs[i]
		}
	}
	return nil
}

// TestRetransmitsByTypeData: megabyte exchanges with 3 % of the packets
// dropped on the way (both directions, 3 % and 15 %): on each
// end's close record the retransmits by type add up to the socket's own
// total_retrans (TCP_INFO), and data retransmits are typed (fast recovery seen
// in both scenarios, timeouts at 15 %; the split is logged).
func TestRetransmitsByTypeData(t *testing.T) {
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP })
	l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, 9300).String())
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })

	type rule struct {
		ns    *netnstest.NS
		chain string
	}
	// At 15 % both ways a megabyte can take over a minute of backed-off
	// retransmissions on a busy machine: 256 KiB, and more exchanges until
	// one times out.
	scenarios := []struct {
		name  string
		rules []rule
		prob  string
		size  int
	}{
		{"network 3 %", []rule{{pair.Client, "INPUT"}, {pair.Server, "INPUT"}}, "0.03", 1 << 20},
		{"network 15 %", []rule{{pair.Client, "INPUT"}, {pair.Server, "INPUT"}}, "0.15", 256 << 10},
	}
	type exchange struct {
		scenario string
		x        lossyExchange
	}
	var all []exchange
	// dataRTOs are the retransmission timeouts an end's TCP_INFO counted
	// past its handshake's (a lost SYN or SYN-ACK times out too, and is
	// typed syn or syn_ack).
	dataRTOs := func(rto uint16, r *Record) int {
		return int(rto) - int(r.RetransmitsByType[RetransmitSYN]) - int(r.RetransmitsByType[RetransmitSYNACK])
	}
	closes := func(port uint16) (cl, sv *Record) {
		col.waitFor(t, "both close records", func(rs []Record) bool {
			cl = findRecord(rs, KindClose, pair.ClientIP, func(r *Record) bool { return r.LocalPort == port })
			sv = findRecord(rs, KindClose, pair.ServerIP, func(r *Record) bool { return r.PeerPort == port })
			return cl != nil && sv != nil
		})
		return cl, sv
	}
	rtos := 0 // ends at 15 % whose data timed out
	for _, sc := range scenarios {
		// Three exchanges each; at 15 % until some end's data timed out
		// (at most eight).
		for i := 0; i < 3 || (sc.prob == "0.15" && rtos == 0 && i < 8); i++ {
			for _, r := range sc.rules {
				iptables(t, r.ns, "-A", r.chain, "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", sc.prob, "-j", "DROP")
			}
			lift := func() {
				for _, r := range sc.rules {
					iptables(t, r.ns, "-D", r.chain, "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", sc.prob, "-j", "DROP")
				}
			}
			x := runLossyExchange(t, pair, l, sc.size, i == 2, lift)
			if sc.prob == "0.15" {
				cl, sv := closes(x.clientPort)
				rtos += min(max(dataRTOs(x.client.Total_rto, cl), 0), 1) + min(max(dataRTOs(x.server.Total_rto, sv), 0), 1)
			}
			all = append(all, exchange{sc.name, x})
		}
	}
	recs := col.waitFor(t, "both close records of every connection", func(rs []Record) bool {
		for _, e := range all {
			if findRecord(rs, KindClose, pair.ClientIP, func(r *Record) bool { return r.LocalPort == e.x.clientPort }) == nil ||
				findRecord(rs, KindClose, pair.ServerIP, func(r *Record) bool { return r.PeerPort == e.x.clientPort }) == nil {
				return false
			}
		}
		return true
	})
	byScenario := map[string]*[RetransmitTypes]uint64{}
	for _, e := range all {
		cl := findRecord(recs, KindClose, pair.ClientIP, func(r *Record) bool { return r.LocalPort == e.x.clientPort })
		sv := findRecord(recs, KindClose, pair.ServerIP, func(r *Record) bool { return r.PeerPort == e.x.clientPort })
		what := fmt.Sprintf("%s, port %d", e.scenario, e.x.clientPort)
		assert.Equal(t, uint64(e.x.client.Total_retrans), sumByType(cl), "client: retransmits by type %v add up to TCP_INFO's, %s", cl.RetransmitsByType, what)
		assert.Equal(t, uint64(e.x.server.Total_retrans), sumByType(sv), "server: retransmits by type %v add up to TCP_INFO's, %s", sv.RetransmitsByType, what)
		assert.Equal(t, cl.Retransmits, sumByType(cl), "client record's own total, %s", what)
		// An end whose data timed out has data retransmits typed so.
		if n := dataRTOs(e.x.client.Total_rto, cl); n > 0 {
			assert.Positive(t, cl.RetransmitsByType[RetransmitTimeout], "client's data timed out %d times, %s", n, what)
		}
		if n := dataRTOs(e.x.server.Total_rto, sv); n > 0 {
			assert.Positive(t, sv.RetransmitsByType[RetransmitTimeout], "server's data timed out %d times, %s", n, what)
		}
		if byScenario[e.scenario] == nil {
			byScenario[e.scenario] = new([RetransmitTypes]uint64)
		}
		for _, r := range []*Record{cl, sv} {
			for i, n := range r.RetransmitsByType {
				byScenario[e.scenario][i] += uint64(n)
			}
		}
		t.Logf("%s: client %v (total %d), server %v (total %d)", what, cl.RetransmitsByType, e.x.client.Total_retrans, sv.RetransmitsByType, e.x.server.Total_retrans)
	}
	for name, n := range byScenario {
		assert.Positive(t, n[RetransmitFast], "%s: no fast retransmit typed", name)
	}
	require.Positive(t, rtos, "at 15 %% loss some end's data timed out (TCP_INFO total_rto)")
	assert.Positive(t, byScenario["network 15 %"][RetransmitTimeout], "network 15 %%: no retransmit after a timeout typed")
}

// TestRetransmitsByTypeHandshake: a server dropping every other SYN, then a
// client dropping every other SYN-ACK. The client's SYN type counts exactly
// the SYNs the server's rule dropped, and the server's SYN-ACK type its
// socket's retransmits before any data (TCP_INFO after accept), on the
// open record and carried to the close; every record's types add up to
// its total.
func TestRetransmitsByTypeHandshake(t *testing.T) {
	const conns = 2
	pair := netnstest.NewPair(t, lossOctet)
	p := loadProbe(t, Options{Mode: AttachTPBTF})
	col := collect(p, func(r *Record) bool { return r.LocalAddr == pair.ClientIP || r.LocalAddr == pair.ServerIP })

	type conn struct {
		port                  uint16
		clientRetr, servRetr  uint32
		synDrops, synackDrops bool
	}
	var cs []conn
	var synDropped uint64
	// Each connect meets a fresh rule that drops the first matching packet
	// only (nth, every 1e9).
	run := func(port uint16, ns *netnstest.NS, rule []string) {
		l, err := pair.Server.Listen(netip.AddrPortFrom(pair.ServerIP, port).String())
		require.NoError(t, err)
		defer l.Close()
		for range conns {
			full := append(append([]string{"INPUT"}, rule...), "-m", "statistic", "--mode", "nth", "--every", "1000000000", "--packet", "0", "-j", "DROP")
			iptables(t, ns, append([]string{"-A"}, full...)...)
			c, err := pair.Client.Dial(t.Context(), l.Addr().String())
			require.NoError(t, err)
			s, err := l.Accept()
			require.NoError(t, err)
			require.Equal(t, uint64(1), dropped(t, ns, "INPUT"), "the rule dropped the connect's first packet it matches")
			iptables(t, ns, append([]string{"-D"}, full...)...)
			ci, err := tcpInfo(c)
			require.NoError(t, err)
			si, err := tcpInfo(s)
			require.NoError(t, err)
			synDrops := ns == pair.Server
			if synDrops {
				synDropped++
			}
			cs = append(cs, conn{uint16(c.LocalAddr().(*net.TCPAddr).Port), ci.Total_retrans, si.Total_retrans, synDrops, !synDrops})
			require.NoError(t, c.Close())
			require.NoError(t, s.Close())
		}
	}
	run(9310, pair.Server, []string{"-p", "tcp", "--syn", "--dport", "9310"})
	run(9311, pair.Client, []string{"-p", "tcp", "--tcp-flags", "SYN,ACK", "SYN,ACK", "--sport", "9311"})

	recs := col.waitFor(t, "opens and closes of both ends", func(rs []Record) bool {
		for _, c := range cs {
			for _, k := range []Kind{KindOpen, KindClose} {
				if findRecord(rs, k, pair.ClientIP, func(r *Record) bool { return r.LocalPort == c.port }) == nil ||
					findRecord(rs, k, pair.ServerIP, func(r *Record) bool { return r.PeerPort == c.port }) == nil {
					return false
				}
			}
		}
		return true
	})
	var synCounted uint64
	for _, c := range cs {
		what := fmt.Sprintf("port %d (SYNs dropped: %v)", c.port, c.synDrops)
		for _, k := range []Kind{KindOpen, KindClose} {
			cl := findRecord(recs, k, pair.ClientIP, func(r *Record) bool { return r.LocalPort == c.port })
			sv := findRecord(recs, k, pair.ServerIP, func(r *Record) bool { return r.PeerPort == c.port })
			t.Logf("%s %s: client %v, server %v", what, k, cl.RetransmitsByType, sv.RetransmitsByType)
			assert.Equal(t, uint64(c.clientRetr), sumByType(cl), "client %s: by type add up to TCP_INFO's, %s", k, what)
			assert.Equal(t, uint64(c.clientRetr), uint64(cl.RetransmitsByType[RetransmitSYN]), "client %s: all SYNs, %s", k, what)
			assert.Equal(t, uint64(c.servRetr), sumByType(sv), "server %s: by type add up to TCP_INFO's, %s", k, what)
			assert.Equal(t, uint64(c.servRetr), uint64(sv.RetransmitsByType[RetransmitSYNACK]), "server %s: all SYN-ACKs, %s", k, what)
			if c.synackDrops {
				assert.Positive(t, sv.RetransmitsByType[RetransmitSYNACK], "server %s: its SYN-ACK was sent again, %s", k, what)
			}
			if k == KindClose && c.synDrops {
				synCounted += uint64(cl.RetransmitsByType[RetransmitSYN])
			}
		}
	}
	assert.Equal(t, synDropped, synCounted, "SYN retransmits = SYNs the server's rule dropped")
}
