package ptrace

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Regs is the general register set of a thread (NT_PRSTATUS).
type Regs = unix.PtraceRegs

// GetRegs reads the general registers of stopped thread tid.
func (t *Tracer) GetRegs(tid int) (Regs, error) {
	var r Regs
	if err := unix.PtraceGetRegs(tid, &r); err != nil {
		return r, fmt.Errorf("getregs %d: %w", tid, err)
	}
	return r, nil
}

// SetRegs writes the general registers of stopped thread tid.
func (t *Tracer) SetRegs(tid int, r *Regs) error {
	if err := unix.PtraceSetRegs(tid, r); err != nil {
		return fmt.Errorf("setregs %d: %w", tid, err)
	}
	return nil
}

// GetXState reads the whole XSAVE area (x87, SSE, AVX, AVX-512, ...) of tid.
// Computing code keeps live values in vector registers, so the general
// registers alone do not make a thread restorable.
func (t *Tracer) GetXState(tid int) ([]byte, error) {
	buf := make([]byte, MaxXStateSize)
	iov := unix.Iovec{Base: &buf[0], Len: uint64(len(buf))}
	if err := ptraceRaw(unix.PTRACE_GETREGSET, tid, ntX86XState, uintptr(unsafe.Pointer(&iov))); err != nil {
		return nil, fmt.Errorf("getregset xstate %d: %w", tid, err)
	}
	return buf[:iov.Len], nil
}

// SetXState writes an XSAVE area read by GetXState back into tid.
func (t *Tracer) SetXState(tid int, xstate []byte) error {
	if len(xstate) == 0 {
		return nil
	}
	iov := unix.Iovec{Base: &xstate[0], Len: uint64(len(xstate))}
	if err := ptraceRaw(unix.PTRACE_SETREGSET, tid, ntX86XState, uintptr(unsafe.Pointer(&iov))); err != nil {
		return fmt.Errorf("setregset xstate %d (%d bytes): %w", tid, len(xstate), err)
	}
	return nil
}

// GetSigmask reads the blocked-signal mask of tid.
func (t *Tracer) GetSigmask(tid int) (uint64, error) {
	var mask uint64
	if err := ptraceRaw(reqGetSigmask, tid, 8, uintptr(unsafe.Pointer(&mask))); err != nil {
		return 0, fmt.Errorf("getsigmask %d: %w", tid, err)
	}
	return mask, nil
}

// SetSigmask sets the blocked-signal mask of tid.
func (t *Tracer) SetSigmask(tid int, mask uint64) error {
	if err := ptraceRaw(reqSetSigmask, tid, 8, uintptr(unsafe.Pointer(&mask))); err != nil {
		return fmt.Errorf("setsigmask %d: %w", tid, err)
	}
	return nil
}

// RseqConfig is struct ptrace_rseq_configuration.
type RseqConfig struct {
	Ptr       uint64
	Size      uint32
	Signature uint32
	Flags     uint32
	_         uint32
}

// GetRseq reads the rseq registration of tid; Ptr is zero when none.
func (t *Tracer) GetRseq(tid int) (RseqConfig, error) {
	var c RseqConfig
	if err := ptraceRaw(reqGetRseqConfiguration, tid, unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c))); err != nil {
		return c, fmt.Errorf("get rseq configuration %d: %w", tid, err)
	}
	return c, nil
}

// syscallStopKindOf tells a system call entry stop from an exit stop by
// RAX: on entry the kernel has set it to -ENOSYS, the value a call that
// does not exist returns. An exit stop of such a call (clone3 on a kernel
// without it) reads as an entry; the caller then acts at the entry of the
// next call, which for a fork that falls back from clone3 to clone is
// where it should.
func syscallStopKindOf(r *Regs) int {
	if int64(r.Rax) == -int64(unix.ENOSYS) {
		return SyscallEntry
	}
	return SyscallExit
}
