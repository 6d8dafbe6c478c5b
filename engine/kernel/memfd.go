package kernel

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ExecMemfd puts an executable image into a memfd to run through
// ProcPath: generated programs need no file on disk, and so no directory
// the user can execute from. The memfd is closed on exec.
func ExecMemfd(name string, elf []byte) (*os.File, error) {
	return memfd(name, elf, Has(MemfdExec))
}

// memfd creates the memfd, with MFD_EXEC when execFlag is set; kernels
// before 6.3 know no such flag (EINVAL), and their memfds are executable.
func memfd(name string, elf []byte, execFlag bool) (*os.File, error) {
	flags := unix.MFD_CLOEXEC
	if execFlag {
		flags |= unix.MFD_EXEC
	}
	fd, err := unix.MemfdCreate(name, flags)
	if execFlag && errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(elf); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", name, err)
	}
	return f, nil
}

// ProcPath is the path that executes f: its /proc/self/fd link.
func ProcPath(f *os.File) string {
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
}
