package bpf

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseNetstat(t *testing.T) {
	const table = `TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits
TcpExt: 1 40 42 7
IpExt: InNoRoutes
IpExt: 0
`
	var s ListenStats
	require.NoError(t, parseNetstat(strings.NewReader(table), &s))
	assert.Equal(t, uint64(40), s.Overflows)
	assert.Equal(t, uint64(42), s.Drops)
	assert.Error(t, parseNetstat(strings.NewReader("IpExt: A\nIpExt: 1\n"), &s))
	assert.Error(t, parseNetstat(strings.NewReader("TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n"), &s))
}

func TestParseSockstatTCP(t *testing.T) {
	const v4 = `sockets: used 256
TCP: inuse 12 orphan 0 tw 84 alloc 34 mem 79
UDP: inuse 0 mem 0
`
	n, err := parseSockstatTCP(v4, "TCP:")
	require.NoError(t, err)
	assert.Equal(t, 12, n)
	n, err = parseSockstatTCP("TCP6: inuse 3\nUDP6: inuse 1\n", "TCP6:")
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	_, err = parseSockstatTCP(v4, "TCP6:")
	assert.Error(t, err)
	_, err = parseSockstatTCP("TCP: orphan 0 inuse 1\n", "TCP:")
	assert.Error(t, err)
}
