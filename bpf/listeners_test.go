package bpf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
`

const procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
   1: 000080FE00000000FF005450B6AC5FFE:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0
`

func TestListenersTellTheDirection(t *testing.T) {
	var l Listeners
	require.NoError(t, l.Parse(strings.NewReader(procTCP)))
	require.NoError(t, l.Parse(strings.NewReader(procTCP6)))
	require.NoError(t, l.ParsePortRange("32768\t60999\n"))
	lo, any4 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3")
	assert.Equal(t, DirectionInbound, l.Direction(lo, 8080), "listener on 127.0.0.1:8080")
	assert.Equal(t, DirectionUnknown, l.Direction(any4, 8080), "8080 listens on loopback only, and is no ephemeral port")
	assert.Equal(t, DirectionInbound, l.Direction(any4, 80), "listener on 0.0.0.0:80")
	assert.Equal(t, DirectionInbound, l.Direction(netip.MustParseAddr("::ffff:10.1.2.3"), 80), "v4-mapped")
	assert.Equal(t, DirectionInbound, l.Direction(netip.MustParseAddr("::1"), 443), "listener on [::1]:443")
	assert.Equal(t, DirectionInbound, l.Direction(netip.MustParseAddr("fe80::5054:ff:fe5f:acb6"), 22))
	assert.Equal(t, DirectionOutbound, l.Direction(any4, 41668), "an ephemeral port nothing listens on: connect()ed")
	assert.Equal(t, DirectionUnknown, l.Direction(any4, 9000), "neither")
	var none *Listeners
	assert.Equal(t, DirectionUnknown, none.Direction(any4, 80))
	assert.Error(t, l.ParsePortRange("x"))
}
