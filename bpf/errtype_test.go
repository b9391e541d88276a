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
