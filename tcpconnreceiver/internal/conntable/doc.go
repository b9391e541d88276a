// Package conntable keeps one entry per live connection between its open
// and its close: how it began (start, direction, process), the identity of
// both ends (resolved once, against the time it started), and the
// counters already accounted for. It turns each probe record into an
// Observation: what the record adds to the connection's counters and how
// it moves the open count. Adoption of connections open before the start,
// reconciliation of walks with queued open records, lost closes and the
// table's bound are decided here.
//
// It must not import pdata or the collector: it knows records (bpf) and
// identities (identity) only; aggregation and emission build on it.
package conntable
