package inject

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// Process is a stopped process the engine runs system calls in, with a
// scratch area in its address space for arguments and results.
type Process struct {
	PID int // host pid
	// Main is the thread the calls run on.
	Main *ptrace.Thread
	// Scratch is the address of Size bytes of the process's memory that
	// the calls may use for their arguments and results.
	Scratch uint64
	Size    uint64
}

// Write copies b into the process at addr.
func (p *Process) Write(addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := unix.ProcessVMWritev(p.PID,
		[]unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil {
		return fmt.Errorf("write %d bytes at %#x in %d: %w", len(b), addr, p.PID, err)
	}
	if n != len(b) {
		return fmt.Errorf("write %d bytes at %#x in %d: short write (%d)", len(b), addr, p.PID, n)
	}
	return nil
}

// Read copies len(b) bytes from the process at addr.
func (p *Process) Read(addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := unix.ProcessVMReadv(p.PID,
		[]unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil {
		return fmt.Errorf("read %d bytes at %#x in %d: %w", len(b), addr, p.PID, err)
	}
	if n != len(b) {
		return fmt.Errorf("read %d bytes at %#x in %d: short read (%d)", len(b), addr, p.PID, n)
	}
	return nil
}

// ScratchAt returns the scratch address at offset off, checking that n
// bytes fit.
func (p *Process) ScratchAt(off, n uint64) (uint64, error) {
	if off+n > p.Size {
		return 0, fmt.Errorf("scratch area of %d bytes too small for %d bytes at %d", p.Size, n, off)
	}
	return p.Scratch + off, nil
}

// PutString writes a NUL-terminated string at the start of the scratch area.
func (p *Process) PutString(off uint64, s string) (uint64, error) {
	addr, err := p.ScratchAt(off, uint64(len(s))+1)
	if err != nil {
		return 0, err
	}
	return addr, p.Write(addr, append([]byte(s), 0))
}

// Openat opens path in the process and returns the new fd.
func (p *Process) Openat(path string, flags, mode uint64) (uint64, error) {
	addr, err := p.PutString(0, path)
	if err != nil {
		return 0, err
	}
	atFdcwd := int64(unix.AT_FDCWD)
	fd, err := p.Main.Call("openat "+path, unix.SYS_OPENAT, uint64(atFdcwd), addr, flags, mode)
	if err != nil {
		return 0, err
	}
	return fd, nil
}

// UnwrapErrno finds the errno inside an injected call's error.
func UnwrapErrno(err error) (syscall.Errno, bool) {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e, true
	}
	return 0, false
}

// PrctlGetInt runs a prctl that stores an int at its second argument.
func (p *Process) PrctlGetInt(name string, option uint64) (int, error) {
	addr, err := p.ScratchAt(0, 4)
	if err != nil {
		return 0, err
	}
	if _, err := p.Main.Call("prctl("+name+")", unix.SYS_PRCTL, option, addr); err != nil {
		return 0, err
	}
	b := make([]byte, 4)
	if err := p.Read(addr, b); err != nil {
		return 0, err
	}
	return int(int32(binary.LittleEndian.Uint32(b))), nil
}
