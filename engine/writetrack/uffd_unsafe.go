package writetrack

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// <linux/userfaultfd.h>, x86-64.
const (
	// UserModeOnly is UFFD_USER_MODE_ONLY: a userfaultfd an unprivileged
	// process may make whatever vm.unprivileged_userfaultfd says.
	UserModeOnly = 1

	uffdAPI             = 0xaa
	uffdioAPI           = 0xc018aa3f // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister      = 0xc020aa00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioWriteProtect  = 0xc018aa06 // _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
	uffdFeatureWPAsync  = 1 << 15
	uffdRegisterModeWP  = 1 << 1
	uffdWriteProtectSet = 1 << 0
)

var errESRCH = unix.ESRCH

type uffdioAPIArg struct{ API, Features, Ioctls uint64 }

type uffdioRegisterArg struct {
	Start, Len, Mode, Ioctls uint64
}

type uffdioWriteProtectArg struct {
	Start, Len, Mode uint64
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// enableWPAsync is the UFFDIO_API handshake asking for asynchronous
// write-protection: the kernel resolves a write to a protected page
// itself, by dropping the protection, and the process never waits.
func enableWPAsync(fd int) error {
	api := uffdioAPIArg{API: uffdAPI, Features: uffdFeatureWPAsync}
	if err := ioctl(fd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		return fmt.Errorf("userfaultfd: UFFDIO_API with UFFD_FEATURE_WP_ASYNC: %w", err)
	}
	return nil
}

// register registers r for write-protection; registering it again with
// the same userfaultfd is harmless.
func register(fd int, r Range) error {
	arg := uffdioRegisterArg{Start: r.Start, Len: r.End - r.Start, Mode: uffdRegisterModeWP}
	if err := ioctl(fd, uffdioRegister, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("UFFDIO_REGISTER: %w", err)
	}
	return nil
}

// writeProtect write-protects the present pages of r.
func writeProtect(fd int, r Range) error {
	arg := uffdioWriteProtectArg{Start: r.Start, Len: r.End - r.Start, Mode: uffdWriteProtectSet}
	if err := ioctl(fd, uffdioWriteProtect, unsafe.Pointer(&arg)); err != nil {
		return fmt.Errorf("UFFDIO_WRITEPROTECT: %w", err)
	}
	return nil
}

func closeFD(fd int) { unix.Close(fd) }
