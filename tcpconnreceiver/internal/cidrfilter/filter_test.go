package cidrfilter

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpconn/tcpconn/bpf"
)

func TestKeep(t *testing.T) {
	rec := func(local, peer string) *bpf.Record {
		return &bpf.Record{LocalAddr: netip.MustParseAddr(local), PeerAddr: netip.MustParseAddr(peer)}
	}
	f := New(Config{IncludeCIDRs: []string{"10.0.0.0/8", "fd00::/8"}, ExcludeCIDRs: []string{"10.9.0.0/16"}})
	assert.True(t, f.Keep(rec("10.1.0.1", "192.168.1.1")), "one end included is enough")
	assert.True(t, f.Keep(rec("fd00::1", "2001:db8::1")))
	assert.False(t, f.Keep(rec("192.168.1.1", "172.16.0.1")), "neither end included")
	assert.False(t, f.Keep(rec("10.1.0.1", "10.9.3.4")), "either end excluded drops it")
	assert.True(t, New(Config{}).Keep(rec("127.0.0.1", "127.0.0.1")), "no filter keeps everything")
	assert.False(t, New(Config{ExcludeCIDRs: []string{"127.0.0.0/8"}}).Keep(rec("127.0.0.1", "10.0.0.1")))
}

func TestValidateNamesEveryBadPrefix(t *testing.T) {
	c := Config{IncludeCIDRs: []string{"10.0.0.0/8", "nope"}, ExcludeCIDRs: []string{"10.0.0.1"}}
	err := c.Validate("filter.")
	require.Error(t, err)
	assert.ErrorContains(t, err, "filter.include_cidrs[1]")
	assert.ErrorContains(t, err, "filter.exclude_cidrs[0]")
	assert.NoError(t, (&Config{IncludeCIDRs: []string{"::/0"}}).Validate("filter."))
}

// KeepAddr is Keep for an end with no peer.
func TestKeepAddr(t *testing.T) {
	f := New(Config{IncludeCIDRs: []string{"10.0.0.0/8"}, ExcludeCIDRs: []string{"10.9.0.0/16"}})
	for _, a := range []string{"10.1.0.1", "10.9.3.4", "192.168.1.1"} {
		addr := netip.MustParseAddr(a)
		assert.Equal(t, f.Keep(&bpf.Record{LocalAddr: addr, PeerAddr: addr}), f.KeepAddr(addr), a)
	}
	assert.True(t, New(Config{}).KeepAddr(netip.MustParseAddr("127.0.0.1")))
}
