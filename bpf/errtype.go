package bpf

import "syscall"

// ErrorType classifies how a connection ended in error: the one place
// that maps the kernel's socket errors to the names metrics and access
// logs use (error.type).
type ErrorType uint8

// Error types. ErrorNone is a clean open or close.
const (
	ErrorNone ErrorType = iota
	ErrorRefused
	ErrorTimedOut
	ErrorReset
	ErrorUnreachable
	// ErrorAborted is a handshake closed with no socket error: the
	// application gave up (closed the socket) first.
	ErrorAborted
	ErrorOther
)

var errorTypeNames = [...]string{
	ErrorNone:        "",
	ErrorRefused:     "refused",
	ErrorTimedOut:    "timed_out",
	ErrorReset:       "reset",
	ErrorUnreachable: "unreachable",
	ErrorAborted:     "aborted",
	ErrorOther:       "other",
}

// ErrorTypes lists every error type but ErrorNone.
var ErrorTypes = []ErrorType{ErrorRefused, ErrorTimedOut, ErrorReset, ErrorUnreachable, ErrorAborted, ErrorOther}

// String returns the error.type value: refused, timed_out, reset,
// unreachable, aborted, other; "" for ErrorNone.
func (e ErrorType) String() string {
	if int(e) < len(errorTypeNames) {
		return errorTypeNames[e]
	}
	return "other"
}

// ClassifyErrno classifies the socket error of a failed handshake.
func ClassifyErrno(errno int32) ErrorType {
	switch syscall.Errno(errno) {
	case syscall.ECONNREFUSED:
		return ErrorRefused
	case syscall.ETIMEDOUT:
		return ErrorTimedOut
	case syscall.ECONNRESET:
		return ErrorReset
	case syscall.EHOSTUNREACH, syscall.ENETUNREACH:
		return ErrorUnreachable
	case 0:
		return ErrorAborted
	}
	return ErrorOther
}

// Error is how the record's connection ended in error: a failed
// handshake by its socket error, an established connection closed by a
// reset (or a write into one) as ErrorReset; ErrorNone otherwise.
func (r *Record) Error() ErrorType {
	switch r.Kind {
	case KindFailure:
		return ClassifyErrno(r.Errno)
	case KindClose:
		if r.Errno == int32(syscall.ECONNRESET) || r.Errno == int32(syscall.EPIPE) {
			return ErrorReset
		}
	}
	return ErrorNone
}
