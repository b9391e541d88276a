// Command scalemodel computes the fleet capacity model of docs/scale.md
// from the figures measured on this machine (each constant below says
// which benchmark gave it), prints its tables as Markdown and draws its
// curves as SVG:
//
//	cd tools && go run ./scalemodel -svg ../docs/scale-model.svg
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
)

// node is one node's output at a connection rate, per profile.
type node struct {
	name        string
	connsPerSec float64 // new connections the node's pods open per second
	// From BenchmarkScaleFlush (tcpconnreceiver): 100 pods, `peers`
	// workloads called and calling per pod.
	peers       int
	points      map[string]float64 // OTLP data points per flush
	promSeries  map[string]float64 // series a Prometheus store holds
	snappyFlush map[string]float64 // OTLP bytes per flush, snappy (the agents' exporter)
}

var (
	p50 = node{name: "p50", connsPerSec: 100, peers: 5,
		points:      map[string]float64{"otel": 11602, "istio": 4101, "kmesh": 10202},
		promSeries:  map[string]float64{"otel": 44602, "istio": 4101, "kmesh": 10202},
		snappyFlush: map[string]float64{"otel": 177517, "istio": 249715, "kmesh": 602868}}
	p99 = node{name: "p99", connsPerSec: 5000, peers: 20,
		points:      map[string]float64{"otel": 44602, "istio": 16101, "kmesh": 40202},
		promSeries:  map[string]float64{"otel": 176602, "istio": 16101, "kmesh": 40202},
		snappyFlush: map[string]float64{"otel": 612070, "istio": 964910, "kmesh": 2348476}}
)

const (
	flushSeconds = 30.0 // the agents' flush_interval in deploy/agent/agent.yaml
	// Access-log records per connection opened on a node: its close there,
	// and the close of the peer's end where that end is in the fleet (one
	// record per end; the fleet sees both ends of in-fleet connections).
	recordsPerConn = 2.0
	// BenchmarkBatchBytes (accesslog): one record in a batch of 1000.
	recordSnappyBytes = 223.7
	recordRawBytes    = 1978.0
	// BenchmarkGateway (bench): one gateway's CPU per item, and its RSS at
	// 10k items/s.
	gatewayRecordMicros = 31.4
	gatewayPointMicros  = 17.4
	gatewayRSSMiB       = 145.0
	// What one gateway may use: its CPU request (1 core) at the HPA's
	// 70 % target.
	gatewayCores = 0.7
	minGateways  = 2
)

type result struct {
	recordsPerSec, pointsPerSec, gateways, storeSeries, samplesPerSec, agentMbps float64
}

func model(n node, profile string, nodes float64) result {
	var r result
	r.recordsPerSec = nodes * n.connsPerSec * recordsPerConn
	r.pointsPerSec = nodes * n.points[profile] / flushSeconds
	cores := (r.recordsPerSec*gatewayRecordMicros + r.pointsPerSec*gatewayPointMicros) / 1e6
	r.gateways = math.Max(minGateways, math.Ceil(cores/gatewayCores))
	r.storeSeries = nodes * n.promSeries[profile]
	r.samplesPerSec = r.storeSeries / flushSeconds
	perNode := n.snappyFlush[profile]/flushSeconds + n.connsPerSec*recordsPerConn*recordSnappyBytes
	r.agentMbps = perNode * 8 / 1e6
	return r
}

func main() {
	svg := flag.String("svg", "", "write the curves to this SVG file")
	flag.Parse()
	fmt.Println("| profile | node | records/s | data points/s | gateways | store series | samples/s | per agent (snappy) |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, profile := range []string{"otel", "istio", "kmesh"} {
		for _, n := range []node{p50, p99} {
			r := model(n, profile, 1000)
			fmt.Printf("| %s | %s (%d conn/s, %d peers) | %s | %s | %.0f | %s | %s | %.2f Mbit/s |\n", profile, n.name,
				int(n.connsPerSec), n.peers, si(r.recordsPerSec), si(r.pointsPerSec), r.gateways, si(r.storeSeries), si(r.samplesPerSec), r.agentMbps)
		}
	}
	if *svg != "" {
		if err := os.WriteFile(*svg, []byte(draw()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

func si(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.0fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// draw plots gateways and store series against node count (10 to 1000
// nodes, log-log) for the otel profile at p50 and p99, and the istio
// profile at p50.
func draw() string {
	type curve struct {
		label, color string
		n            node
		profile      string
	}
	curves := []curve{{"otel, p50 nodes", "#1f77b4", p50, "otel"}, {"otel, p99 nodes", "#d62728", p99, "otel"}, {"istio, p50 nodes", "#2ca02c", p50, "istio"}}
	var b strings.Builder
	const w, h, pad = 420.0, 300.0, 55.0
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", 2*w, h+40)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	panel := func(x0 float64, title, unit string, ymin, ymax float64, value func(result) float64) {
		lx := func(v float64) float64 { return x0 + pad + (math.Log10(v)-1)/2*(w-pad-20) }
		ly := func(v float64) float64 {
			return h - pad + 20 - (math.Log10(v)-math.Log10(ymin))/(math.Log10(ymax)-math.Log10(ymin))*(h-pad-20)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="16" font-size="13" font-weight="bold">%s</text>`+"\n", x0+pad, title)
		for _, nodes := range []float64{10, 100, 1000} {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", lx(nodes), ly(ymin), lx(nodes), ly(ymax))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>`+"\n", lx(nodes), ly(ymin)+14, nodes)
		}
		for v := ymin; v <= ymax; v *= 10 {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", lx(10), ly(v), lx(1000), ly(v))
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", lx(10)-4, ly(v)+4, si(v))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">nodes (100 pods each)</text>`+"\n", lx(100), ly(ymin)+30)
		fmt.Fprintf(&b, `<text transform="translate(%.1f,%.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0+12, ly(math.Sqrt(ymin*ymax)), unit)
		for i, c := range curves {
			var pts []string
			for nodes := 10.0; nodes <= 1000.01; nodes *= math.Pow(10, 0.05) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", lx(nodes), ly(math.Max(ymin, value(model(c.n, c.profile, nodes))))))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c.color, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="10" height="3" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
				x0+pad+10, 30+float64(i)*14, c.color, x0+pad+24, 34+float64(i)*14, c.label)
		}
	}
	panel(0, "Gateways (1 core each, 70 % target)", "gateways", 1, 1000, func(r result) float64 { return r.gateways })
	panel(w, "Series in the store", "active series", 1e4, 1e9, func(r result) float64 { return r.storeSeries })
	b.WriteString("</svg>\n")
	return b.String()
}
