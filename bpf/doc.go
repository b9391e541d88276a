// Package bpf loads the tcpconn eBPF probe and decodes its records.
//
// Loading the probe (Load, Probe, Preflight) is Linux-only: those files
// carry a linux build constraint. The rest (Record and its decoder, Kind,
// Direction, Flags, State, Options, Stats) builds everywhere, for code that
// only handles records.
//
// It must not import pdata, the collector, client-go or the identity
// resolver: records are plain Go values, and what they mean for metrics,
// logs and identities is decided by the receiver's packages.
package bpf
