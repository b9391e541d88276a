package bpf

import "errors"

// ErrNoData is returned by Read when no record arrived within the poll interval.
var ErrNoData = errors.New("no record within the poll interval")

// ErrStopped is returned by Read once Stop was called and every record
// produced before it has been read.
var ErrStopped = errors.New("probe stopped")

// ErrNotSupported is returned by Walk when the probe runs in a
// mode without BPF iterators.
var ErrNotSupported = errors.New("not supported")
