package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SetOptions replaces the PTRACE_O_* options of a stopped tracee.
func (t *Tracer) SetOptions(tid, opts int) error {
	if err := ptraceRaw(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(opts)); err != nil {
		return fmt.Errorf("ptrace setoptions %d: %w", tid, err)
	}
	return nil
}

// Cont resumes a stopped tracee, delivering sig (0 for none).
func (t *Tracer) Cont(tid, sig int) error {
	if err := ptraceRaw(unix.PTRACE_CONT, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("continue %d: %w", tid, err)
	}
	return nil
}

// ContSyscall resumes a stopped tracee to its next system call entry or
// exit, delivering sig (0 for none).
func (t *Tracer) ContSyscall(tid, sig int) error {
	if err := ptraceRaw(unix.PTRACE_SYSCALL, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("continue %d to its next system call: %w", tid, err)
	}
	return nil
}

// SingleStep runs a stopped tracee for one instruction.
func (t *Tracer) SingleStep(tid int) error {
	if err := ptraceRaw(unix.PTRACE_SINGLESTEP, tid, 0, 0); err != nil {
		return fmt.Errorf("single-step %d: %w", tid, err)
	}
	return nil
}

// PokeText writes data into a stopped tracee's memory at addr the way a
// debugger sets a breakpoint: through the page protection, so into
// read-only code as well.
func (t *Tracer) PokeText(tid int, addr uintptr, data []byte) error {
	if _, err := unix.PtracePokeData(tid, addr, data); err != nil {
		return fmt.Errorf("poke %d at %#x: %w", tid, addr, err)
	}
	return nil
}
