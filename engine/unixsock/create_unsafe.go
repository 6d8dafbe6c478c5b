package unixsock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// connectRaw calls connect(2) with a raw address. unix.Connect cannot send
// AF_UNSPEC, which is how a datagram socket drops its peer.
func connectRaw(fd int, sa *unix.RawSockaddrAny) error {
	_, _, errno := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(sa)), unsafe.Sizeof(*sa))
	if errno != 0 {
		return errno
	}
	return nil
}
