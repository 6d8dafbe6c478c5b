package kernel

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Requests and constants golang.org/x/sys/unix does not name.
const (
	reqGetRseqConfiguration = 0x420f
	// cloneArgsSizeVer1 is sizeof(struct clone_args) up to set_tid_size.
	cloneArgsSizeVer1 = 80
	// pagemapScan is PAGEMAP_SCAN, _IOWR('f', 16, struct pm_scan_arg).
	pagemapScan      = 0xc0606610
	pageIsPresent    = 1 << 3
	uffdUserModeOnly = 1
	uffdAPI          = 0xaa
	// uffdioAPI is UFFDIO_API, _IOWR(0xAA, 0x3F, struct uffdio_api).
	uffdioAPI          = 0xc018aa3f
	uffdFeatureWPAsync = 1 << 15
	softDirtyBit       = 1 << 55
	// prTimerCreateRestoreIDs is PR_TIMER_CREATE_RESTORE_IDS, Get its
	// query.
	prTimerCreateRestoreIDs    = 77
	prTimerCreateRestoreIDsGet = 2
)

// cloneArgs is struct clone_args up to set_tid_size.
type cloneArgs struct {
	Flags, Pidfd, ChildTID, ParentTID, ExitSignal, Stack, StackSize, TLS, SetTID, SetTIDSize uint64
}

// probeClone3 calls clone3 with arguments too short to be valid: a kernel
// with the call says EINVAL and creates nothing.
func probeClone3() (bool, string) {
	_, _, e := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
	if e == unix.EINVAL {
		return true, ""
	}
	return false, errnoDetail("clone3", e)
}

// probeClone3SetTID passes a set_tid size with no set_tid array: a kernel
// that knows set_tid refuses the pair (EINVAL) before creating anything, an
// older one refuses the fields it does not know (E2BIG).
func probeClone3SetTID() (bool, string) {
	args := cloneArgs{SetTIDSize: 1}
	_, _, e := unix.Syscall(unix.SYS_CLONE3, uintptr(unsafe.Pointer(&args)), cloneArgsSizeVer1, 0)
	if e == unix.EINVAL {
		return true, ""
	}
	return false, errnoDetail("clone3 with set_tid", e)
}

// probeRseq calls rseq with a zero length, which a kernel with the call
// refuses with EINVAL.
func probeRseq() (bool, string) {
	_, _, e := unix.Syscall6(unix.SYS_RSEQ, 0, 0, 0, 0, 0, 0)
	if e == unix.EINVAL {
		return true, ""
	}
	return false, errnoDetail("rseq", e)
}

// probeSoftDirty touches a new page and reads its pagemap entry: with
// CONFIG_MEM_SOFT_DIRTY a page just written is soft-dirty.
func probeSoftDirty() (bool, string) {
	page, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false, errnoDetail("mmap", err)
	}
	defer unix.Munmap(page)
	page[0] = 1
	entry, err := pagemapEntry(uintptr(unsafe.Pointer(&page[0])))
	if err != nil {
		return false, err.Error()
	}
	if entry&softDirtyBit == 0 {
		return false, "a page just written is not soft-dirty in /proc/self/pagemap"
	}
	return true, ""
}

// pagemapEntry reads the pagemap entry of addr in this process.
func pagemapEntry(addr uintptr) (uint64, error) {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(addr/uintptr(os.Getpagesize())*8)); err != nil {
		return 0, fmt.Errorf("read /proc/self/pagemap: %w", err)
	}
	return *(*uint64)(unsafe.Pointer(&b[0])), nil
}

// pmScanArg is struct pm_scan_arg; pageRegion is struct page_region.
type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd, Vec, VecLen, MaxPages       uint64
	CategoryInverted, CategoryMask, CategoryAnyofMask, ReturnMask uint64
}

type pageRegion struct{ Start, End, Categories uint64 }

// probePagemapScan asks PAGEMAP_SCAN for the present pages of one page.
func probePagemapScan() (bool, string) {
	page, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false, errnoDetail("mmap", err)
	}
	defer unix.Munmap(page)
	page[0] = 1
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return false, err.Error()
	}
	defer f.Close()
	var vec [1]pageRegion
	start := uint64(uintptr(unsafe.Pointer(&page[0])))
	arg := pmScanArg{Size: uint64(unsafe.Sizeof(pmScanArg{})), Start: start, End: start + uint64(len(page)),
		Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: 1, ReturnMask: pageIsPresent}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	runtime.KeepAlive(page)
	if e != 0 {
		return false, errnoDetail("ioctl(PAGEMAP_SCAN)", e)
	}
	return true, ""
}

// uffdioAPIArg is struct uffdio_api.
type uffdioAPIArg struct{ API, Features, Ioctls uint64 }

// probeUserfaultfd opens a userfaultfd as the caller (user-mode faults only
// where the kernel knows the flag, as an unprivileged user may) and, for
// wpAsync, asks for the asynchronous write-protect feature.
func probeUserfaultfd(wpAsync bool) (bool, string) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|uffdUserModeOnly, 0, 0)
	if e == unix.EINVAL {
		fd, _, e = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	}
	if e != 0 {
		return false, errnoDetail("userfaultfd", e)
	}
	defer unix.Close(int(fd))
	if !wpAsync {
		return true, ""
	}
	api := uffdioAPIArg{API: uffdAPI}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPI, uintptr(unsafe.Pointer(&api))); e != 0 {
		return false, errnoDetail("ioctl(UFFDIO_API)", e)
	}
	if api.Features&uffdFeatureWPAsync == 0 {
		return false, fmt.Sprintf("UFFDIO_API features %#x lack UFFD_FEATURE_WP_ASYNC", api.Features)
	}
	return true, ""
}

// probePtrace stops a probe program with PTRACE_SEIZE and PTRACE_INTERRUPT
// and makes request req on it: a kernel without the request says EIO.
func probePtrace(req int, name string) (bool, string) {
	type result struct {
		ok     bool
		detail string
	}
	done := make(chan result, 1)
	go func() {
		// Every ptrace request must come from the thread that attached.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		ok, detail := ptraceProbe(req, name)
		done <- result{ok, detail}
	}()
	r := <-done
	return r.ok, r.detail
}

func ptraceProbe(req int, name string) (bool, string) {
	p, err := startProgram(pauseProgram(), nil)
	if err != nil {
		return false, err.Error()
	}
	defer func() {
		p.Kill()
		p.Wait()
	}()
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(p.Pid), 0, unix.PTRACE_O_EXITKILL, 0, 0); e != 0 {
		return false, errnoDetail("PTRACE_SEIZE", e)
	}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_INTERRUPT, uintptr(p.Pid), 0, 0, 0, 0); e != 0 {
		return false, errnoDetail("PTRACE_INTERRUPT", e)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(p.Pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil && err != unix.EINTR {
			return false, errnoDetail("wait4", err)
		}
		if pid == p.Pid && ws.Stopped() {
			break
		}
		if time.Now().After(deadline) {
			return false, "the probe program did not stop"
		}
		time.Sleep(time.Millisecond)
	}
	var buf [128]byte
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(p.Pid), 32, uintptr(unsafe.Pointer(&buf[0])), 0, 0); e != 0 {
		return false, errnoDetail(name, e)
	}
	return true, ""
}

// probeTimensVfork runs a program that makes a user and a time namespace
// for its children and then vforks: kernels before 6.3 refuse the vfork
// (EINVAL), because the child would share memory with a parent in another
// time namespace.
func probeTimensVfork() (bool, string) {
	p, err := startProgram(timensVforkProgram(), nil)
	if err != nil {
		return false, err.Error()
	}
	st, err := p.Wait()
	if err != nil {
		return false, err.Error()
	}
	switch st.ExitCode() {
	case 0:
		return true, ""
	case probeVforkRefused:
		return false, "vfork after unshare(CLONE_NEWTIME): EINVAL"
	case probeNoNamespace:
		return false, "unshare(CLONE_NEWUSER|CLONE_NEWTIME) failed, so this could not be tried"
	default:
		return false, fmt.Sprintf("the probe program ended with %v", st)
	}
}

// probeClonePidfd starts a program that exits at once, asking for a pidfd:
// a kernel without CLONE_PIDFD ignores the flag and leaves none.
func probeClonePidfd() (bool, string) {
	pidfd := -1
	p, err := startProgram(exitProgram(), &syscall.SysProcAttr{PidFD: &pidfd})
	if err != nil {
		return false, err.Error()
	}
	p.Wait()
	if pidfd < 0 {
		return false, "clone(CLONE_PIDFD) returned no pidfd"
	}
	unix.Close(pidfd)
	return true, ""
}

// startProgram runs a generated program from a memfd.
func startProgram(elf []byte, sys *syscall.SysProcAttr) (*os.Process, error) {
	f, err := memfd("ckpt-probe", elf, true)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := os.StartProcess(ProcPath(f), []string{"ckpt-probe"}, &os.ProcAttr{Sys: sys})
	if err != nil {
		return nil, fmt.Errorf("start the probe program: %w", err)
	}
	return p, nil
}
