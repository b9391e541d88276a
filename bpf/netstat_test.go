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
