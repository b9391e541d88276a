package bpf

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.setDefaults()
	assert.Equal(t, AttachAuto, o.Mode)
	assert.Equal(t, uint32(DefaultRingBufferBytes), o.RingBufferBytes)
	assert.Equal(t, uint64(512<<10), o.WakeupBytes, "an eighth of the ring")
	assert.Equal(t, DefaultPollInterval, o.PollInterval)

	// The wakeup follows a ring of another size, and a size given stays.
	o = Options{RingBufferBytes: 64 << 10}
	o.setDefaults()
	assert.Equal(t, uint64(8<<10), o.WakeupBytes)
	o = Options{WakeupBytes: 4096}
	o.setDefaults()
	assert.Equal(t, uint64(4096), o.WakeupBytes)
}
