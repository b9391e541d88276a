package bpf

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/internal/netnstest"
)

// TestIPv6BytesCauseAndUID: over IPv6, with 3 % of the client's egress
// dropped, a megabyte each way, closed by the client's RST: each end's
// bytes and retransmits equal its TCP_INFO (tp_btf: the retransmits by type
// add up to them), the causes are right, both ends have a handshake
// duration and carry one UID.
func TestIPv6BytesCauseAndUID(t *testing.T) {
	for _, mode := range []AttachMode{AttachTPBTF, AttachRawTP} {
		t.Run(string(mode), func(t *testing.T) {
			const size = 1 << 20
			pair := netnstest.NewPair(t, lossOctet)
			server, client := pair.AddIPv6(t)
			p := loadProbe(t, Options{Mode: mode})
			col := collect(p, func(r *Record) bool { return r.LocalAddr == server || r.LocalAddr == client })
			l, err := pair.Server.Listen(netip.AddrPortFrom(server, 9500).String())
			require.NoError(t, err)
			t.Cleanup(func() { l.Close() })

			rule := []string{"OUTPUT", "-p", "tcp", "-m", "statistic", "--mode", "random", "--probability", "0.03", "-j", "DROP"}
			ip6tables := func(op string) {
				out, err := exec.Command("ip", append([]string{"netns", "exec", pair.Client.Name, "ip6tables", op}, rule...)...).CombinedOutput()
				require.NoError(t, err, "%s", out)
			}
			ip6tables("-A")
			x := runLossyExchange(t, pair, l, size, true, func() { ip6tables("-D") })
			t.Logf("client acked %d (bytes_sent-bytes_retrans %d), server acked %d", x.client.Bytes_acked, x.oldClient, x.server.Bytes_acked)

			recs := col.waitFor(t, "open and close of both ends", func(rs []Record) bool { return len(rs) >= 4 })
			var uids []uint64
			for _, r := range recs {
				require.Equal(t, x.clientPort, map[bool]uint16{true: r.LocalPort, false: r.PeerPort}[r.LocalAddr == client])
				dir := DirectionOutbound
				if r.LocalAddr == server {
					dir = DirectionInbound
				}
				r.SetDirection(dir)
				uid, ok := r.UID()
				require.True(t, ok)
				uids = append(uids, uid)
				if r.Kind == KindOpen {
					assert.Positive(t, r.Handshake, "handshake duration, %v end", dir)
				}
				if r.Kind != KindClose {
					continue
				}
				if mode == AttachTPBTF {
					var typed uint64
					for _, n := range r.RetransmitsByType {
						typed += uint64(n)
					}
					assert.Equal(t, r.Retransmits, typed, "retransmits by type add up, %v end", dir)
				}
				if dir == DirectionOutbound {
					assert.Equal(t, uint64(size), r.BytesSent)
					assert.Equal(t, x.client.Bytes_acked-1, r.BytesSent)
					assert.Equal(t, x.client.Bytes_received, r.BytesReceived)
					assert.Equal(t, CauseResetSent, r.CloseCause())
					assert.Equal(t, uint64(x.client.Total_retrans), r.Retransmits)
				} else {
					assert.Equal(t, x.server.Bytes_acked, r.BytesSent)
					assert.Equal(t, x.server.Bytes_received, r.BytesReceived)
					assert.Equal(t, CauseResetReceived, r.CloseCause())
				}
			}
			for _, u := range uids {
				assert.Equal(t, uids[0], u, "one UID on both ends")
			}
		})
	}
}
