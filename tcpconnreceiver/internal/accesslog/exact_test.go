package accesslog

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/conntable"
)

var update = flag.Bool("update", false, "rewrite testdata/fill.json")

// exactCases are records that between them take every branch of Fill: each
// kind, both directions and families, adopted, dialled, retransmits by
// type, failures, resets, ends with and without identities.
func exactCases() ([]bpf.Record, []conntable.Observation) {
	recs, obs := observed()
	unknown := &identity.Identity{}
	for i, n := 0, len(recs); i < n; i++ {
		recs = append(recs, recs[i])
		obs = append(obs, conntable.Observation{Local: unknown, Peer: unknown, Delta: obs[i].Delta})
	}
	retrans := recs[2]
	retrans.Retransmits, retrans.RetransmitsByType = 9, [bpf.RetransmitTypes]uint32{1, 0, 3, 5, 0}
	dialled := obs[2]
	dialled.Dialled = netip.MustParseAddrPort("10.96.0.10:80")
	mapped := recs[7]
	mapped.LocalAddr, mapped.PeerAddr = netip.MustParseAddr("::ffff:10.1.0.2"), netip.MustParseAddr("::ffff:10.1.0.1")
	zoned := obs[3]
	local, peer := *zoned.Local, *zoned.Peer
	local.Zone, peer.Zone = "zone-b", "zone-a"
	zoned.Local, zoned.Peer = &local, &peer
	return append(recs, retrans, recs[2], mapped, recs[3]), append(obs, obs[2], dialled, obs[7], zoned)
}

// TestFillExactOutput holds Fill's output to the byte, attribute order
// included: the receiver's golden test compares attributes as a set, and a
// faster Fill must write the same records, not merely equivalent ones.
func TestFillExactOutput(t *testing.T) {
	recs, obs := exactCases()
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	var c Converter
	for i := range recs {
		c.Fill(lrs.AppendEmpty(), &recs[i], &obs[i], t0.Add(time.Duration(i)*time.Second))
	}
	raw, err := (&plog.JSONMarshaler{}).MarshalLogs(ld)
	require.NoError(t, err)
	var got bytes.Buffer
	require.NoError(t, json.Indent(&got, raw, "", " "))
	got.WriteByte('\n')

	file := filepath.Join("testdata", "fill.json")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(file, got.Bytes(), 0o644))
	}
	want, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, string(want), got.String())
}

// Fill allocates nothing of its own beyond one string for the record's
// text: every other allocation is pdata's, one per value and one for the
// attribute array. Before, each address, the UID, the start time, the
// command, the body and the event name were strings of their own.
func TestFillAllocations(t *testing.T) {
	recs, obs := exactCases()
	var c Converter
	lr := plog.NewLogRecord()
	for i := range recs {
		c.Fill(lr, &recs[i], &obs[i], t0)
		values := lr.Attributes().Len() + 1 // and the body
		allocs := testing.AllocsPerRun(20, func() { c.Fill(lr, &recs[i], &obs[i], t0) })
		require.LessOrEqual(t, allocs, float64(values+2), "record %d", i)
	}
}
