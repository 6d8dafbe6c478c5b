package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// remote is a stopped process the engine runs system calls in, with a
// scratch area in its address space for arguments and results.
type remote struct {
	pid     int // host pid
	main    *ptrace.Thread
	scratch uint64
	size    uint64
}

// write copies b into the process at addr.
func (r *remote) write(addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := unix.ProcessVMWritev(r.pid,
		[]unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil {
		return fmt.Errorf("write %d bytes at %#x in %d: %w", len(b), addr, r.pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("write %d bytes at %#x in %d: short write (%d)", len(b), addr, r.pid, n)
	}
	return nil
}

// read copies len(b) bytes from the process at addr.
func (r *remote) read(addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := unix.ProcessVMReadv(r.pid,
		[]unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil {
		return fmt.Errorf("read %d bytes at %#x in %d: %w", len(b), addr, r.pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("read %d bytes at %#x in %d: short read (%d)", len(b), addr, r.pid, n)
	}
	return nil
}

// scratchAt returns the scratch address at offset off, checking that n
// bytes fit.
func (r *remote) scratchAt(off, n uint64) (uint64, error) {
	if off+n > r.size {
		return 0, fmt.Errorf("scratch area of %d bytes too small for %d bytes at %d", r.size, n, off)
	}
	return r.scratch + off, nil
}

// putString writes a NUL-terminated string at the start of the scratch area.
func (r *remote) putString(off uint64, s string) (uint64, error) {
	addr, err := r.scratchAt(off, uint64(len(s))+1)
	if err != nil {
		return 0, err
	}
	return addr, r.write(addr, append([]byte(s), 0))
}

// openat opens path in the process and returns the new fd.
func (r *remote) openat(path string, flags, mode uint64) (uint64, error) {
	addr, err := r.putString(0, path)
	if err != nil {
		return 0, err
	}
	atFdcwd := int64(unix.AT_FDCWD)
	fd, err := r.main.Call("openat "+path, unix.SYS_OPENAT, uint64(atFdcwd), addr, flags, mode)
	if err != nil {
		return 0, err
	}
	return fd, nil
}

// unwrapErrno finds the errno inside an injected call's error.
func unwrapErrno(err error) (syscall.Errno, bool) {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e, true
	}
	return 0, false
}

// prctlGetInt runs a prctl that stores an int at its second argument.
func (r *remote) prctlGetInt(name string, option uint64) (int, error) {
	addr, err := r.scratchAt(0, 4)
	if err != nil {
		return 0, err
	}
	if _, err := r.main.Call("prctl("+name+")", unix.SYS_PRCTL, option, addr); err != nil {
		return 0, err
	}
	b := make([]byte, 4)
	if err := r.read(addr, b); err != nil {
		return 0, err
	}
	return int(int32(binary.LittleEndian.Uint32(b))), nil
}
