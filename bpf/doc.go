// Package bpf loads the tcpconn eBPF probe and decodes its records.
//
// Loading the probe (Load, Probe, Preflight) is Linux-only: those files
// carry a linux build constraint. The rest (Record and its decoder, Kind,
// Direction, Flags, State, Options, Stats) builds everywhere, for code that
// only handles records.
package bpf
