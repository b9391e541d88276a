package tcpconnreceiver

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/pmetrictest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// profileSequence plays a fixed history through the aggregator and
// returns the last of three flushes:
//   - flush 1 (t0+5s): the fixed records (frontend -> checkout, failures);
//   - a new pod (cart) appears and opens and closes one connection;
//   - flush 2 (t0+10s);
//   - cart disappears; a burst from 6 unknown peers exceeds series_limit;
//   - flush 3 (t0+2m): cart's series, idle for longer than series_expiry,
//     is gone; the burst shows as the overflow series.
func profileSequence(t *testing.T, profile, temporality string) pmetric.Metrics {
	t.Helper()
	cfg := createDefaultConfig()
	cfg.Profile, cfg.Temporality = profile, temporality
	cfg.SeriesLimit = 12
	cfg.SeriesExpiry = time.Minute
	res := fixedResolver()
	h := newAggHarness(cfg, res)

	h.add(fixedRecords()...)
	h.emit(t0.Add(5 * time.Second))

	cartAddr := netip.MustParseAddr("10.1.0.5")
	res[netip.AddrPortFrom(cartAddr, 0)] = &identity.Identity{Pod: "cart-1", PodUID: "uid-cart", PodIP: "10.1.0.5", Namespace: "shop",
		Workload: "cart", WorkloadKind: "StatefulSet", Principal: "spiffe://cluster.local/ns/shop/sa/cart", App: "cart", Version: "v3",
		CanonicalService: "cart", CanonicalRevision: "v3", Cluster: "Kubernetes"}
	cart := bpf.Record{Direction: bpf.DirectionOutbound, ConnID: 50, Start: t0.Add(6 * time.Second),
		LocalAddr: cartAddr, LocalPort: 41000, PeerAddr: serverAddr, PeerPort: 8080}
	open, closed := cart, cart
	open.Kind, open.Time = bpf.KindOpen, t0.Add(6*time.Second)
	closed.Kind, closed.Time, closed.BytesSent, closed.BytesReceived = bpf.KindClose, t0.Add(7*time.Second), 300, 30
	h.add(open, closed)
	h.emit(t0.Add(10 * time.Second))

	delete(res, netip.AddrPortFrom(cartAddr, 0))
	for i := range 6 {
		peer := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		fail := bpf.Record{Kind: bpf.KindFailure, Direction: bpf.DirectionOutbound, ConnID: uint64(100 + i), Errno: 111,
			Start: t0.Add(100 * time.Second), Time: t0.Add(100 * time.Second), LocalAddr: clientAddr, LocalPort: 42000, PeerAddr: peer, PeerPort: 80}
		// Unknown peers resolve to nothing: give each its own workload so
		// that each needs a series of its own.
		res[netip.AddrPortFrom(peer, 0)] = &identity.Identity{Workload: fmt.Sprintf("external-%d", i), Namespace: "ext"}
		h.add(fail)
	}
	return h.emit(t0.Add(2 * time.Minute))
}

func TestGoldenProfiles(t *testing.T) {
	for _, profile := range []string{ProfileOTel, ProfileIstio, ProfileKmesh} {
		for _, temporality := range []string{TemporalityCumulative, TemporalityDelta} {
			t.Run(profile+"/"+temporality, func(t *testing.T) {
				got := profileSequence(t, profile, temporality)
				file := filepath.Join("testdata", "golden", "profile_"+profile+"_"+temporality+".yaml")
				if *update {
					require.NoError(t, golden.WriteMetrics(t, file, got, golden.SkipMetricTimestampNormalization()))
				}
				want, err := golden.ReadMetrics(file)
				require.NoError(t, err)
				require.NoError(t, pmetrictest.CompareMetrics(want, got,
					pmetrictest.IgnoreResourceMetricsOrder(), pmetrictest.IgnoreMetricsOrder(), pmetrictest.IgnoreMetricDataPointsOrder()))
			})
		}
	}
}

// The sequence's properties hold in every profile, not just as recorded.
func TestProfileSequenceProperties(t *testing.T) {
	t.Run("expired series are gone", func(t *testing.T) {
		md := profileSequence(t, ProfileIstio, TemporalityCumulative)
		assert.Zero(t, countPointsWith(md, "source_workload", "cart"), "cart's series expired")
		assert.Positive(t, countPointsWith(md, "source_workload", "overflow"), "the burst overflowed")
		assert.Positive(t, countPointsWith(md, "source_workload", "frontend"), "frontend's series live on")
	})
	t.Run("delta starts at the previous flush", func(t *testing.T) {
		md := profileSequence(t, ProfileOTel, TemporalityDelta)
		n := 0
		forEachSumPoint(md, "tcp.bytes.sent", func(dp pmetric.NumberDataPoint) {
			if w, _ := dp.Attributes().Get("peer.workload"); w.Str() == "checkout" {
				n++
				assert.Equal(t, t0.Add(10*time.Second), dp.StartTimestamp().AsTime().UTC(), "start of a delta point")
				assert.Zero(t, dp.IntValue(), "nothing new since the previous flush")
			} else {
				assert.True(t, dp.StartTimestamp().AsTime().After(t0.Add(10*time.Second)), "a new series starts when first seen")
			}
		})
		assert.Positive(t, n)
	})
	t.Run("histograms follow the temporality", func(t *testing.T) {
		for _, temporality := range []string{TemporalityCumulative, TemporalityDelta} {
			cfg := createDefaultConfig()
			cfg.Temporality = temporality
			h := newAggHarness(cfg, fixedResolver())
			var counts []uint64
			for i := range 2 {
				recs := fixedRecords()[:4] // connection 1 on both ends
				for j := range recs {
					recs[j].ConnID += uint64(10 * i)
				}
				h.add(recs...)
				md := h.emit(t0.Add(time.Duration(i+1) * 10 * time.Second))
				forEachHistogramPoint(md, "tcp.connection.duration", func(m pmetric.Metric, dp pmetric.HistogramDataPoint) {
					if d, _ := dp.Attributes().Get("direction"); d.Str() != "outbound" {
						return
					}
					counts = append(counts, dp.Count())
					if temporality == TemporalityDelta {
						assert.Equal(t, pmetric.AggregationTemporalityDelta, m.Histogram().AggregationTemporality())
						if i == 1 {
							assert.Equal(t, t0.Add(10*time.Second), dp.StartTimestamp().AsTime().UTC(), "starts at the previous flush")
						}
					}
				})
			}
			want := []uint64{1, 2}
			if temporality == TemporalityDelta {
				want = []uint64{1, 1}
			}
			assert.Equal(t, want, counts, temporality)
		}
	})
	t.Run("istio swaps bytes on reporter=source like ztunnel", func(t *testing.T) {
		cfg := createDefaultConfig()
		cfg.Profile = ProfileIstio
		h := newAggHarness(cfg, fixedResolver())
		recs := fixedRecords()
		h.add(recs[:4]...) // open and close of connection 1 on both ends
		md := h.emit(t0.Add(5 * time.Second))
		// Connection 1: the client (frontend) sent 100000 and received 5000.
		assert.Equal(t, int64(5000), sumWhereAll(md, "istio_tcp_sent_bytes", map[string]string{"reporter": "source", "source_workload": "frontend", "destination_workload": "checkout"}))
		assert.Equal(t, int64(5000), sumWhereAll(md, "istio_tcp_sent_bytes", map[string]string{"reporter": "destination", "source_workload": "frontend", "destination_workload": "checkout"}))
		assert.Equal(t, int64(100000), sumWhereAll(md, "istio_tcp_received_bytes", map[string]string{"reporter": "destination", "source_workload": "frontend"}))
	})
}

func forEachHistogramPoint(md pmetric.Metrics, name string, fn func(pmetric.Metric, pmetric.HistogramDataPoint)) {
	forEachMetric(md, func(m pmetric.Metric) {
		if m.Name() != name || m.Type() != pmetric.MetricTypeHistogram {
			return
		}
		for l := range m.Histogram().DataPoints().Len() {
			fn(m, m.Histogram().DataPoints().At(l))
		}
	})
}

func countPointsWith(md pmetric.Metrics, key, val string) int {
	n := 0
	forEachMetric(md, func(m pmetric.Metric) {
		if m.Type() != pmetric.MetricTypeSum {
			return
		}
		dps := m.Sum().DataPoints()
		for d := range dps.Len() {
			if v, ok := dps.At(d).Attributes().Get(key); ok && v.Str() == val {
				n++
			}
		}
	})
	return n
}

func sumWhereAll(md pmetric.Metrics, name string, want map[string]string) int64 {
	var total int64
	forEachSumPoint(md, name, func(dp pmetric.NumberDataPoint) {
		for k, v := range want {
			if got, ok := dp.Attributes().Get(k); !ok || got.Str() != v {
				return
			}
		}
		total += dp.IntValue()
	})
	return total
}

// Addresses are never attributes unless a metric opts in, per attribute.
func TestPeerAddressIsOptIn(t *testing.T) {
	count := func(cfg *Config) (withAddr, points int) {
		h := newAggHarness(cfg, fixedResolver())
		h.add(fixedRecords()...)
		md := h.emit(t0.Add(time.Minute))
		forEachSumPoint(md, "tcp.bytes.sent", func(dp pmetric.NumberDataPoint) {
			points++
			if _, ok := dp.Attributes().Get("peer.address"); ok {
				withAddr++
			}
		})
		return withAddr, points
	}
	withAddr, points := count(createDefaultConfig())
	assert.Zero(t, withAddr)
	assert.Positive(t, points)

	cfg := createDefaultConfig()
	require.NoError(t, confmap.NewFromStringMap(map[string]any{"metrics": map[string]any{"tcp.bytes.sent": map[string]any{
		"attributes": []any{"direction", "network.type", "peer.workload", "peer.workload.kind", "peer.namespace", "peer.address"},
	}}}).Unmarshal(&cfg.MetricsBuilderConfig))
	withAddr, points = count(cfg)
	assert.Equal(t, points, withAddr, "every point of the opted-in metric carries the address")
	assert.Greater(t, points, 3, "one series per peer address")
}

// The hand-built histograms are switched one by one under metrics:, as
// the generated metrics are; histograms: false still turns them all off,
// and a name that is neither is refused.
func TestHistogramSwitches(t *testing.T) {
	names := []string{"tcp.connection.duration", "tcp.rtt", "system.network.tcp.handshake.duration"}
	emitted := func(cfg *Config) map[string]bool {
		h := newAggHarness(cfg, fixedResolver())
		h.add(fixedRecords()...)
		md := h.emit(t0.Add(time.Minute))
		got := map[string]bool{}
		for _, n := range names {
			forEachHistogramPoint(md, n, func(pmetric.Metric, pmetric.HistogramDataPoint) { got[n] = true })
		}
		got["tcp.bytes.sent"] = forEachSumPoint(md, "tcp.bytes.sent", func(pmetric.NumberDataPoint) {})
		return got
	}
	assert.Equal(t, map[string]bool{names[0]: true, names[1]: true, names[2]: true, "tcp.bytes.sent": true}, emitted(createDefaultConfig()))

	cfg := createDefaultConfig()
	require.NoError(t, confmap.NewFromStringMap(map[string]any{"metrics": map[string]any{
		"tcp.rtt":        map[string]any{"enabled": false},
		"tcp.bytes.sent": map[string]any{"enabled": false},
	}}).Unmarshal(cfg))
	assert.False(t, cfg.HistogramMetrics.RTT.Enabled)
	assert.True(t, cfg.HistogramMetrics.ConnectionDuration.Enabled)
	assert.Equal(t, map[string]bool{names[0]: true, names[2]: true, "tcp.bytes.sent": false}, emitted(cfg))

	cfg = createDefaultConfig()
	cfg.Histograms = false
	assert.Equal(t, map[string]bool{"tcp.bytes.sent": true}, emitted(cfg))

	err := confmap.NewFromStringMap(map[string]any{"metrics": map[string]any{"tcp.rttt": map[string]any{"enabled": false}}}).Unmarshal(createDefaultConfig())
	assert.ErrorContains(t, err, "tcp.rttt")
}

// histograms.md, written by hand, names each hand-built histogram with its
// bucket bounds and its description.
func TestHistogramsDocumented(t *testing.T) {
	doc, err := os.ReadFile("histograms.md")
	require.NoError(t, err)
	text := strings.Join(strings.Fields(string(doc)), " ")
	for _, v := range profile.New(profile.Options{Name: profile.OTel, Workload: true, Histograms: true}).Views {
		for _, h := range v.Histograms {
			assert.Contains(t, text, "### "+h.Name)
			bounds := make([]string, len(h.Bounds))
			for i, b := range h.Bounds {
				bounds[i] = strconv.FormatFloat(b, 'f', -1, 64)
			}
			assert.Contains(t, text, strings.Join(bounds, ", "), "bounds of %s", h.Name)
		}
	}
}
