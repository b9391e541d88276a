// Package tcpconnreceiver is the tcpconn receiver component: its factory,
// configuration and lifecycle, the one reader loop that takes every probe
// record through the connection table into the metrics and the access
// logs, and the receiver's self-metrics. The jobs along the way live in
// packages of their own under internal/:
//
//	cidrfilter  which connections are reported, by address
//	conntable   per-connection state: open / update / close, adoption, counters
//	aggregate   series keys, views, limits, expiry (no pdata)
//	profile     per profile, what a series is called and labelled
//	metricemit  series -> pdata: temporality, start times, Resources, histograms
//	accesslog   record -> plog: filters, sampling, batching
//	metadata    mdatagen's generated builders and config
//
// This package is the only one that knows all of them; the probe (bpf)
// and the identity resolver (identity) know none of them.
package tcpconnreceiver

//go:generate go tool -modfile=../tools/go.mod mdatagen metadata.yaml
