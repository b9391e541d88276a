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

// CloseCause says how an established connection ended: the one place that
// names it for access logs and metrics (tcp.close.cause).
type CloseCause uint8

// Close causes. CauseNone is for records other than closes.
const (
	CauseNone CloseCause = iota
	// CauseNormal: FINs both ways, or the socket closed without error
	// and without a reset.
	CauseNormal
	// CauseResetReceived: the peer reset the connection (sk_err
	// ECONNRESET, or EPIPE in CLOSE_WAIT, set by the kernel's tcp_reset).
	CauseResetReceived
	// CauseResetSent: the local end reset it (FlagResetSent): closed with
	// unread data, SO_LINGER 0, a listener closing with children it never
	// accepted, tcp_abort, or a reset the kernel sent on a socket still
	// open.
	CauseResetSent
	// CauseTimedOut: retransmissions or keepalive probes exhausted
	// (sk_err ETIMEDOUT, or the ICMP error that came with them). A
	// keepalive timeout also sends a reset: it is still timed_out.
	CauseTimedOut
)

var closeCauseNames = [...]string{
	CauseNone:          "",
	CauseNormal:        "normal",
	CauseResetReceived: "reset_received",
	CauseResetSent:     "reset_sent",
	CauseTimedOut:      "timed_out",
}

// String returns the tcp.close.cause value: normal, reset_received,
// reset_sent, timed_out; "" for CauseNone.
func (c CloseCause) String() string {
	if int(c) < len(closeCauseNames) {
		return closeCauseNames[c]
	}
	return ""
}

// CloseCause is how the record's connection ended: CauseNone unless rec
// is a close record. A socket error says a reset was received or the
// connection timed out (a timeout first: a keepalive timeout also sends a
// reset); otherwise the probe's FlagResetSent says the local end sent one.
// ECONNABORTED (tcp_abort, e.g. ss -K) without a reset is normal.
func (r *Record) CloseCause() CloseCause {
	if r.Kind != KindClose {
		return CauseNone
	}
	switch syscall.Errno(r.Errno) {
	case 0, syscall.ECONNABORTED:
	case syscall.ECONNRESET, syscall.EPIPE:
		return CauseResetReceived
	default:
		return CauseTimedOut
	}
	if r.Flags&FlagResetSent != 0 {
		return CauseResetSent
	}
	return CauseNormal
}
