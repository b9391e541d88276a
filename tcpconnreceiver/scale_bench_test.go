package tcpconnreceiver

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// scaleNode is a node of the capacity model (docs/scale.md): 100 pods,
// two replicas per workload over ten namespaces; each pod calls `peers`
// workloads elsewhere, is called by `peers` workloads, and has one refused
// connect. Every peer workload has three replicas and a Service.
func scaleNode(peers int) (staticResolver, []bpf.Record) {
	res := staticResolver{}
	local := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 7, byte(i / 250), byte(i%250 + 1)}) }
	remote := func(w, replica int) netip.Addr { return netip.AddrFrom4([4]byte{10, 8, byte(w), byte(replica + 1)}) }
	for i := range 100 {
		w := fmt.Sprintf("app-%d", i/2)
		res[netip.AddrPortFrom(local(i), 0)] = &identity.Identity{Pod: fmt.Sprintf("%s-%d", w, i), PodUID: fmt.Sprintf("uid-%d", i),
			PodIP: local(i).String(), Namespace: fmt.Sprintf("ns-%d", i%10), Workload: w, WorkloadKind: "Deployment",
			Principal: "spiffe://cluster.local/ns/x/sa/" + w, App: w, Version: "v1", CanonicalService: w, CanonicalRevision: "v1", Cluster: "Kubernetes"}
	}
	for w := range 200 {
		for r := range 3 {
			name := fmt.Sprintf("peer-%d", w)
			res[netip.AddrPortFrom(remote(w, r), 0)] = &identity.Identity{Pod: fmt.Sprintf("%s-%d", name, r), PodIP: remote(w, r).String(),
				Namespace: fmt.Sprintf("ns-%d", w%10), Workload: name, WorkloadKind: "Deployment", Principal: "spiffe://cluster.local/ns/x/sa/" + name,
				App: name, Version: "v1", CanonicalService: name, CanonicalRevision: "v1", Cluster: "Kubernetes",
				Service: name + ".svc.cluster.local", ServiceName: name, ServiceNamespace: fmt.Sprintf("ns-%d", w%10)}
		}
	}
	var recs []bpf.Record
	id := uint64(1)
	conn := func(kind bpf.Kind, dir bpf.Direction, l, p netip.Addr, lport, pport uint16, errno int32) {
		rec := bpf.Record{Kind: kind, Direction: dir, ConnID: id, Start: t0, Time: t0.Add(time.Second), LocalAddr: l, PeerAddr: p,
			LocalPort: lport, PeerPort: pport, BytesSent: 1000, BytesReceived: 2000, SRTT: time.Millisecond, Errno: errno}
		id++
		if kind == bpf.KindClose {
			open := rec
			open.Kind = bpf.KindOpen
			recs = append(recs, open)
		}
		recs = append(recs, rec)
	}
	for i := range 100 {
		for j := range peers {
			w := (i*7 + j) % 200
			conn(bpf.KindClose, bpf.DirectionOutbound, local(i), remote(w, j%3), 40000, 8080, 0)
			conn(bpf.KindClose, bpf.DirectionInbound, local(i), remote((w+100)%200, j%3), 8080, 40000, 0)
		}
		conn(bpf.KindFailure, bpf.DirectionOutbound, local(i), remote(i%200, 0), 40001, 8081, 111)
	}
	return res, recs
}

// BenchmarkScaleFlush is one node's flush in the capacity model: series
// per profile (both views), data points, and OTLP bytes per flush, raw,
// gzip and snappy (the agent's exporter sends snappy every flush_interval).
func BenchmarkScaleFlush(b *testing.B) {
	for _, name := range []string{ProfileOTel, ProfileIstio, ProfileKmesh} {
		for _, peers := range []int{5, 20} {
			b.Run(fmt.Sprintf("%s/peers=%d", name, peers), func(b *testing.B) {
				cfg := createDefaultConfig()
				cfg.Profile, cfg.SeriesLimit = name, 1<<20
				res, recs := scaleNode(peers)
				h := newAggHarness(cfg, res)
				h.add(recs...)
				perView := h.agg.Series()
				series := 0
				for _, n := range perView {
					series += n
				}
				var md pmetric.Metrics
				at := t0.Add(time.Minute)
				for b.Loop() {
					at = at.Add(5 * time.Second)
					md = h.emit(at)
				}
				raw, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
				if err != nil {
					b.Fatal(err)
				}
				var z bytes.Buffer
				zw := gzip.NewWriter(&z)
				_, _ = zw.Write(raw)
				_ = zw.Close()
				b.ReportMetric(float64(series), "series")
				for i, n := range perView {
					b.ReportMetric(float64(n), "series-"+profile.New(cfg.profileOptions()).Views[i].Kind.String())
				}
				b.ReportMetric(float64(promSeries(md)), "prom-series")
				b.ReportMetric(float64(md.DataPointCount()), "points/flush")
				b.ReportMetric(float64(len(raw)), "otlp-B/flush")
				b.ReportMetric(float64(z.Len()), "gzip-B/flush")
				b.ReportMetric(float64(len(snappy.Encode(nil, raw))), "snappy-B/flush")
			})
		}
	}
}

// promSeries is how many series a Prometheus store holds for md: one per
// Sum point, and a histogram point's buckets, sum and count.
func promSeries(md pmetric.Metrics) int {
	n := 0
	forEachMetric(md, func(m pmetric.Metric) {
		switch m.Type() {
		case pmetric.MetricTypeSum:
			n += m.Sum().DataPoints().Len()
		case pmetric.MetricTypeHistogram:
			for i := range m.Histogram().DataPoints().Len() {
				n += m.Histogram().DataPoints().At(i).BucketCounts().Len() + 2
			}
		}
	})
	return n
}
