package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestBackupNotes runs the raw_tp probe and its backup by hand, on one CPU,
// in the orders the kernel can run them in when interrupts nest, with
// socket pointers that read as nothing (so no record is made): the backup
// takes exactly the state changes the probe did not see, and the note
// stack comes back to where it was.
func TestBackupNotes(t *testing.T) {
	p := loadProbe(t, Options{Mode: AttachRawTP, noAttach: true})
	probe, backup := p.objs.prog, p.objs.backup

	type change struct {
		sk       uint64
		old, new State
	}
	run := func(prog *ebpf.Program, c change) {
		t.Helper()
		args := []uint64{c.sk, uint64(c.old), uint64(c.new)}
		_, err := prog.Run(&ebpf.RunOptions{Context: args, CPU: 0, Flags: unix.BPF_F_TEST_RUN_ON_CPU})
		require.NoError(t, err)
	}
	counts := func() (taken, noRecord uint64) {
		t.Helper()
		var v []uint64
		require.NoError(t, p.objs.Stats.Lookup(statRescued, &v))
		taken = v[0]
		require.NoError(t, p.objs.Stats.Lookup(statNoRecord, &v))
		return taken, v[0]
	}
	top := func() uint32 {
		t.Helper()
		var v []tcpconnNotes // per CPU
		require.NoError(t, p.objs.Seen.Lookup(uint32(0), &v))
		return v[0].Top
	}
	open := func(sk uint64) change { return change{sk, StateSynSent, StateEstablished} }   // makes a record
	quiet := func(sk uint64) change { return change{sk, StateEstablished, StateFinWait1} } // makes none

	// Both ran: nothing taken, the stack as it was.
	run(probe, open(1))
	run(backup, open(1))
	taken, noRecord := counts()
	assert.Zero(t, taken)
	assert.Zero(t, noRecord)
	assert.Equal(t, uint32(0), top())

	// The probe skipped (an interrupt inside it, before or after its note):
	// the backup takes the interrupting change, then the outer one's note
	// is still there.
	run(probe, open(2))
	run(backup, open(3)) // interrupting, the probe skipped
	run(backup, quiet(4))
	run(backup, open(2))
	taken, noRecord = counts()
	assert.Equal(t, uint64(1), taken, "the interrupting open")
	assert.Equal(t, uint64(1), noRecord, "the interrupting change that makes no record")
	assert.Equal(t, uint32(0), top())

	// An interrupt between the two programs: its changes push and pop
	// above the outer note.
	run(probe, open(5))
	run(probe, open(6))
	run(backup, open(6))
	run(probe, quiet(7))
	run(backup, quiet(7))
	run(backup, open(5))
	taken, _ = counts()
	assert.Equal(t, uint64(1), taken, "nothing more taken")
	assert.Equal(t, uint32(0), top())

	// An interrupt inside the backup before it reads the stack (the kernel
	// skips the backup there): the outer backup finds its note under the
	// interrupt's and drops both.
	run(probe, open(8))
	run(probe, open(9)) // its backup skipped
	run(backup, open(8))
	taken, _ = counts()
	assert.Equal(t, uint64(1), taken)
	assert.Equal(t, uint32(0), top())

	// An interrupt inside the backup after its pop leaves a note for good;
	// more of them than the stack holds wrap over each other, and a note
	// still waiting is never overwritten.
	const notes = uint64(tcpconnTcpconnGeometryTCPCONN_NOTES) // the stack's size
	for sk := uint64(100); sk < 100+2*notes+4; sk++ {
		run(probe, open(1))
		run(backup, open(1))
		run(probe, open(sk)) // its backup skipped
	}
	run(probe, open(10))
	run(backup, open(11)) // interrupting, the probe skipped
	run(backup, open(10))
	taken, _ = counts()
	assert.Equal(t, uint64(2), taken, "only the interrupting open")
	run(backup, open(12)) // the probe skipped, no note of it below either
	taken, _ = counts()
	assert.Equal(t, uint64(3), taken)
}
