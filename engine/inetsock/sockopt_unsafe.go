package inetsock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// getsockoptBytes reads a socket option as the raw structure the kernel
// fills (x/sys's GetsockoptString stops at the first zero byte).
func getsockoptBytes(fd, level, opt, size int) ([]byte, error) {
	buf := make([]byte, size)
	n := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return nil, e
	}
	return buf[:n], nil
}
