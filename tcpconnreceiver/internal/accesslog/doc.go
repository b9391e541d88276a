// Package accesslog turns connection records into access-log records:
// which kinds are logged, the filters and the per-connection sampling, the
// one-line body in the Kmesh / ztunnel field order with the same values
// as typed attributes, and bounded batches handed to a sender through a
// bounded queue (what does not fit is dropped and counted, never
// blocking the reader).
//
// It is the logs side's only pdata user; it must not import the metrics
// packages (aggregate, profile, metricemit).
package accesslog
