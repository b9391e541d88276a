package bpf

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestErrorTypes(t *testing.T) {
	for errno, want := range map[syscall.Errno]ErrorType{
		syscall.ECONNREFUSED: ErrorRefused,
		syscall.ETIMEDOUT:    ErrorTimedOut,
		syscall.ECONNRESET:   ErrorReset,
		syscall.EHOSTUNREACH: ErrorUnreachable,
		syscall.ENETUNREACH:  ErrorUnreachable,
		0:                    ErrorAborted,
		syscall.EPERM:        ErrorOther,
	} {
		assert.Equal(t, want, ClassifyErrno(int32(errno)), "errno %d", errno)
	}
}

func TestRecordError(t *testing.T) {
	for _, tc := range []struct {
		kind  Kind
		errno syscall.Errno
		want  ErrorType
	}{
		{KindFailure, syscall.ECONNREFUSED, ErrorRefused},
		{KindFailure, 0, ErrorAborted},
		{KindClose, syscall.ECONNRESET, ErrorReset},
		{KindClose, syscall.EPIPE, ErrorReset},
		{KindClose, 0, ErrorNone},
		{KindClose, syscall.ETIMEDOUT, ErrorNone},
		{KindOpen, 0, ErrorNone},
		{KindUpdate, syscall.ECONNRESET, ErrorNone},
	} {
		r := Record{Kind: tc.kind, Errno: int32(tc.errno)}
		assert.Equal(t, tc.want, r.Error(), "%v errno %d", tc.kind, tc.errno)
	}
	for _, e := range ErrorTypes {
		assert.NotEmpty(t, e.String())
	}
}

func TestCloseCause(t *testing.T) {
	for _, tc := range []struct {
		kind  Kind
		errno syscall.Errno
		flags Flags
		want  CloseCause
	}{
		{KindClose, 0, FlagFinAcked | FlagFinReceived, CauseNormal},
		{KindClose, syscall.ECONNRESET, 0, CauseResetReceived},
		{KindClose, syscall.EPIPE, 0, CauseResetReceived},
		{KindClose, 0, FlagResetSent, CauseResetSent},
		{KindClose, syscall.ECONNABORTED, FlagResetSent, CauseResetSent},
		{KindClose, syscall.ECONNABORTED, 0, CauseNormal},
		{KindClose, syscall.ETIMEDOUT, FlagResetSent, CauseTimedOut}, // keepalive: a reset, then the timeout
		{KindClose, syscall.EHOSTUNREACH, 0, CauseTimedOut},
		{KindFailure, syscall.ECONNREFUSED, 0, CauseNone},
		{KindOpen, 0, 0, CauseNone},
		{KindUpdate, 0, 0, CauseNone},
	} {
		r := Record{Kind: tc.kind, Errno: int32(tc.errno), Flags: tc.flags}
		assert.Equal(t, tc.want, r.CloseCause(), "%v errno %d flags %b", tc.kind, tc.errno, tc.flags)
	}
	for c := CauseNormal; c <= CauseTimedOut; c++ {
		assert.NotEmpty(t, c.String())
	}
	assert.Empty(t, CauseNone.String())
}
