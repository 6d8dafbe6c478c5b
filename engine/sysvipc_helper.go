package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/stub"
)

// This file holds the System V IPC helper (see sysvipc.go) and the kernel's
// IPC structures it reads and writes.

// ipcHelperScratch is the helper's scratch area: paths and the kernel's IPC
// structures. Bulk data goes through a mapping made on demand (buf).
const ipcHelperScratch = 64 << 10

// Offsets in the scratch area.
const (
	scratchPath   = 0    // a NUL-terminated path
	scratchStruct = 4096 // one *_ds or *info structure
	scratchText   = 8192 // small file contents
)

// ipcHelper is a stub in the job's user and IPC namespaces.
type ipcHelper struct {
	inject.Process
	t    *ptrace.Tracer
	proc *os.Process
	// buf is a read-write mapping of bufSize bytes in the helper for data
	// larger than the scratch area.
	buf, bufSize uint64
}

// startIPCHelper starts the helper, takes it under t and moves it into the
// user and IPC namespaces of process initHostPID. Precondition: on t's
// OS thread, which the helper's parent-death signal is tied to.
func startIPCHelper(t *ptrace.Tracer, initHostPID int) (_ *ipcHelper, err error) {
	base, err := stubBase(nil, stub.Size(ipcHelperScratch))
	if err != nil {
		return nil, err
	}
	elf, layout := stub.Build(base, ipcHelperScratch)
	f, err := kernel.ExecMemfd("ckpt-ipc-helper", elf)
	if err != nil {
		return nil, fmt.Errorf("IPC helper: %w", err)
	}
	defer f.Close()
	p, err := os.StartProcess(kernel.ProcPath(f), []string{"ckpt-ipc-helper"}, &os.ProcAttr{
		Dir: "/",
		Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		return nil, fmt.Errorf("IPC helper: start: %w", err)
	}
	h := &ipcHelper{t: t, proc: p}
	defer func() {
		if err != nil {
			h.stop()
		}
	}()
	if err := t.Seize(p.Pid, unix.PTRACE_O_EXITKILL); err != nil {
		return nil, fmt.Errorf("IPC helper: %w", err)
	}
	if err := t.Interrupt(p.Pid); err != nil {
		return nil, fmt.Errorf("IPC helper: %w", err)
	}
	if _, err := t.WaitStop(p.Pid, 0); err != nil {
		return nil, fmt.Errorf("IPC helper: %w", err)
	}
	main, err := t.NewThread(p.Pid, layout.Gadget)
	if err != nil {
		return nil, fmt.Errorf("IPC helper: %w", err)
	}
	h.Process = inject.Process{PID: p.Pid, Main: main, Scratch: layout.Scratch, Size: layout.ScratchSize}

	if err := h.joinNamespaces(initHostPID); err != nil {
		return nil, fmt.Errorf("IPC helper: join the user and IPC namespaces of job init %d: %w", initHostPID, err)
	}
	return h, nil
}

// joinNamespaces moves the helper into the user and IPC namespaces of
// hostPID: both at once through a pidfd where setns takes one (5.8), else
// one after the other through /proc/PID/ns, the user namespace first (it
// gives the capabilities the second join needs).
func (h *ipcHelper) joinNamespaces(hostPID int) error {
	if kernel.Has(kernel.SetnsPidfd) {
		pidfd, err := h.Main.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(hostPID), 0)
		if err != nil {
			return err
		}
		_, err = h.Main.Call("setns", unix.SYS_SETNS, pidfd, unix.CLONE_NEWUSER|unix.CLONE_NEWIPC)
		h.Main.Syscall(unix.SYS_CLOSE, pidfd)
		return err
	}
	// Both opened before the first join: the helper's /proc is the host's,
	// and joining does not change what it shows.
	var fds []uint64
	defer func() {
		for _, fd := range fds {
			h.Main.Syscall(unix.SYS_CLOSE, fd)
		}
	}()
	for _, ns := range []string{"user", "ipc"} {
		fd, err := h.Openat(fmt.Sprintf("/proc/%d/ns/%s", hostPID, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	if _, err := h.Main.Call("setns(CLONE_NEWUSER)", unix.SYS_SETNS, fds[0], unix.CLONE_NEWUSER); err != nil {
		return err
	}
	_, err := h.Main.Call("setns(CLONE_NEWIPC)", unix.SYS_SETNS, fds[1], unix.CLONE_NEWIPC)
	return err
}

// stop kills the helper and reaps it.
func (h *ipcHelper) stop() {
	if err := h.proc.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		logrus.Debugf("IPC helper %d: kill: %v", h.proc.Pid, err)
	}
	h.proc.Wait()
}

// ensureBuf makes buf at least n bytes long.
func (h *ipcHelper) ensureBuf(n uint64) error {
	n = (n + pageSize - 1) &^ (pageSize - 1)
	if n <= h.bufSize {
		return nil
	}
	if h.bufSize != 0 {
		h.Main.Syscall(unix.SYS_MUNMAP, h.buf, h.bufSize)
		h.buf, h.bufSize = 0, 0
	}
	addr, err := h.Main.Call("mmap buffer", unix.SYS_MMAP, 0, n, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return err
	}
	h.buf, h.bufSize = addr, n
	return nil
}

// readSysctl reads /proc/sys/kernel/name as the helper sees it: the IPC
// sysctls are those of the namespace of the task that opens them.
func (h *ipcHelper) readSysctl(name string) (string, error) {
	path, err := h.PutString(scratchPath, "/proc/sys/kernel/"+name)
	if err != nil {
		return "", err
	}
	atFdcwd := int64(unix.AT_FDCWD)
	fd, err := h.Main.Call("open "+name, unix.SYS_OPENAT, uint64(atFdcwd), path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer h.Main.Syscall(unix.SYS_CLOSE, fd)
	buf := h.Scratch + scratchText
	n, err := h.Main.Call("read "+name, unix.SYS_READ, fd, buf, 4096)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if err := h.Read(buf, b); err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// writeSysctl writes value to /proc/sys/kernel/name in the helper's IPC
// namespace.
func (h *ipcHelper) writeSysctl(name, value string) error {
	path, err := h.PutString(scratchPath, "/proc/sys/kernel/"+name)
	if err != nil {
		return err
	}
	atFdcwd := int64(unix.AT_FDCWD)
	fd, err := h.Main.Call("open "+name, unix.SYS_OPENAT, uint64(atFdcwd), path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer h.Main.Syscall(unix.SYS_CLOSE, fd)
	buf := h.Scratch + scratchText
	if err := h.Write(buf, []byte(value)); err != nil {
		return err
	}
	n, err := h.Main.Call("write "+name, unix.SYS_WRITE, fd, buf, uint64(len(value)))
	if err != nil {
		return err
	}
	if n != uint64(len(value)) {
		return fmt.Errorf("write %s: short write (%d of %d bytes)", name, n, len(value))
	}
	return nil
}

// setNextID makes the next object of a kind ("shm", "sem", "msg") created
// in the namespace take id.
func (h *ipcHelper) setNextID(kind string, id int) error {
	return h.writeSysctl(kind+"_next_id", strconv.Itoa(id))
}

// sameSysctl compares sysctl values as the kernel prints them (the four
// numbers of "sem" are separated by tabs).
func sameSysctl(a, b string) bool {
	return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
}

// isErrno reports whether err carries errno e.
func isErrno(err error, e syscall.Errno) bool {
	got, ok := inject.UnwrapErrno(err)
	return ok && got == e
}

// Commands and flags of the System V IPC calls that golang.org/x/sys/unix
// does not name.
const (
	shmStatAny = 15     // SHM_STAT_ANY: SHM_STAT without the read permission check (4.17)
	shmInfo    = 14     // SHM_INFO
	shmLock    = 11     // SHM_LOCK
	shmDest    = 0o1000 // SHM_DEST in shm_perm.mode
	shmLocked  = 0o2000 // SHM_LOCKED in shm_perm.mode
	semGetAll  = 13     // GETALL
	semSetAll  = 17     // SETALL
	semInfo    = 19     // SEM_INFO
	semStatAny = 20     // SEM_STAT_ANY
	msgInfo    = 12     // MSG_INFO
	msgStatAny = 13     // MSG_STAT_ANY
	msgCopy    = 0o40000
	ipcNowait  = 0o4000
)

// Layouts of the kernel's IPC structures on x86-64 (struct ipc64_perm and
// the *id64_ds that start with it).
const (
	permSize     = 48
	semidDsSize  = 104
	msqidDsSize  = 120
	ipcInfoSize  = 256 // room for struct shm_info, seminfo, msginfo
	offSemNsems  = 80
	offMsgCbytes = 72
	offMsgQnum   = 80
	offMsgQbytes = 88
	offShmSwp    = 24 // struct shm_info.shm_swp
	offSemUsz    = 28 // struct seminfo.semusz: sets in use, for SEM_INFO
	offMsgPool   = 0  // struct msginfo.msgpool: queues in use, for MSG_INFO
)

// parsePerm decodes a struct ipc64_perm.
func parsePerm(b []byte, id int) image.SysVPerm {
	return image.SysVPerm{
		Key:  int32(abi.Order.Uint32(b[0:])),
		ID:   id,
		UID:  int(abi.Order.Uint32(b[4:])),
		GID:  int(abi.Order.Uint32(b[8:])),
		CUID: int(abi.Order.Uint32(b[12:])),
		CGID: int(abi.Order.Uint32(b[16:])),
		Mode: abi.Order.Uint32(b[20:]) & 0o777,
	}
}

// ipcKind is what differs between shm, sem and msg when listing objects.
type ipcKind struct {
	name          string
	ctl           uintptr
	info, statAny uint64
	dsSize        int
}

var (
	shmKind = ipcKind{"shm", unix.SYS_SHMCTL, shmInfo, shmStatAny, abi.ShmidDsSize}
	semKind = ipcKind{"sem", unix.SYS_SEMCTL, semInfo, semStatAny, semidDsSize}
	msgKind = ipcKind{"msg", unix.SYS_MSGCTL, msgInfo, msgStatAny, msqidDsSize}
)

// ctl runs kind's *ctl call; semctl has the semaphore number in between.
func (h *ipcHelper) ctl(k ipcKind, id int, cmd, arg uint64) (uint64, error) {
	name := fmt.Sprintf("%sctl(%d, %d)", k.name, id, cmd)
	if k.ctl == unix.SYS_SEMCTL {
		return h.Main.Call(name, k.ctl, uint64(id), 0, cmd, arg)
	}
	return h.Main.Call(name, k.ctl, uint64(id), cmd, arg)
}

// info runs *_INFO and returns the highest index in use and the info
// structure.
func (h *ipcHelper) info(k ipcKind) (int, []byte, error) {
	buf := h.Scratch + scratchStruct
	maxIdx, err := h.ctl(k, 0, k.info, buf)
	if err != nil {
		return 0, nil, err
	}
	b := make([]byte, ipcInfoSize)
	if err := h.Read(buf, b); err != nil {
		return 0, nil, err
	}
	return int(maxIdx), b, nil
}

// list calls fn with the id and *_ds structure of every object of kind k.
func (h *ipcHelper) list(k ipcKind, fn func(id int, ds []byte) error) error {
	maxIdx, _, err := h.info(k)
	if err != nil {
		return err
	}
	buf := h.Scratch + scratchStruct
	for idx := 0; idx <= maxIdx; idx++ {
		id, err := h.ctl(k, idx, k.statAny, buf)
		if isErrno(err, unix.EINVAL) {
			continue // a free index
		}
		if err != nil {
			return err
		}
		ds := make([]byte, k.dsSize)
		if err := h.Read(buf, ds); err != nil {
			return err
		}
		if err := fn(int(id), ds); err != nil {
			return err
		}
	}
	return nil
}

// abi.Order is the byte order of the kernel's structures.
