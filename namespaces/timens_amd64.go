package namespaces

import (
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/tinyelf"
)

// Descriptors and exit statuses of the time namespace entry program.
const (
	// timensEntryNSFd is the job's time namespace, given to the program.
	timensEntryNSFd = 3
	// timensEntryExeFd is the stub to run, when the target is a memfd
	// (its path is /proc/self/fd/4).
	timensEntryExeFd = 4
	// timensEntrySetnsFailed and timensEntryExecFailed are its exit
	// statuses when it could not enter the namespace or run the target.
	timensEntrySetnsFailed = 125
	timensEntryExecFailed  = 127
)

// timensEntryELF returns a static program that enters the time namespace
// on fd 3, closes it, marks fd 4 close-on-exec, clears its ambient
// capabilities when dropCaps is set, and executes argv[1] with argv[2:] as
// its argv and its own environment.
//
// It is how a task gets into the job's time namespace on kernels before
// 6.3, which refuse a vfork child of a thread whose children go into
// another time namespace than its own: Go starts every child with vfork, so
// init starts this program in its own time namespace, and the program, a
// single-threaded process that has exec'd, may join another with setns.
// Joining needs CAP_SYS_ADMIN in the job's user namespace: the program is
// started holding it as an ambient capability, and drops it (dropCaps)
// before it runs the job's command, which must run without any.
func timensEntryELF(dropCaps bool) []byte {
	var a tinyelf.Asm
	a.MovImm(tinyelf.RDI, timensEntryNSFd)
	a.MovImm(tinyelf.RSI, unix.CLONE_NEWTIME)
	a.Syscall(unix.SYS_SETNS)
	a.TestEAX()
	a.Js("setns_failed")
	a.MovImm(tinyelf.RDI, timensEntryNSFd)
	a.Syscall(unix.SYS_CLOSE)
	a.MovImm(tinyelf.RDI, timensEntryExeFd)
	a.MovImm(tinyelf.RSI, unix.F_SETFD)
	a.MovImm(tinyelf.RDX, unix.FD_CLOEXEC)
	a.Syscall(unix.SYS_FCNTL) // EBADF when there is no fd 4: nothing to do
	if dropCaps {
		a.MovImm(tinyelf.RDI, unix.PR_CAP_AMBIENT)
		a.MovImm(tinyelf.RSI, unix.PR_CAP_AMBIENT_CLEAR_ALL)
		a.MovImm(tinyelf.RDX, 0)
		a.MovImm(tinyelf.R10, 0)
		a.MovImm(tinyelf.R8, 0)
		a.Syscall(unix.SYS_PRCTL)
		a.TestEAX()
		a.Js("exec_failed")
	}
	a.Emit(0x48, 0x8b, 0x7c, 0x24, 0x10) // mov rdi, [rsp+16]        argv[1]
	a.Emit(0x48, 0x8d, 0x74, 0x24, 0x18) // lea rsi, [rsp+24]        &argv[2]
	emitEnvp(&a)
	a.Syscall(unix.SYS_EXECVE)
	a.Label("exec_failed")
	emitStderr(&a, "exec_msg", len(timensExecMsg))
	a.Exit(timensEntryExecFailed)
	a.Label("setns_failed")
	emitStderr(&a, "setns_msg", len(timensSetnsMsg))
	a.Exit(timensEntrySetnsFailed)
	a.Data("exec_msg", []byte(timensExecMsg))
	a.Data("setns_msg", []byte(timensSetnsMsg))
	return tinyelf.Build(a.MustAssemble())
}

// The entry program's messages on stderr, for a job that ends at once.
const (
	timensExecMsg  = "ckpt-apptainer: the job's command could not be executed in its time namespace\n"
	timensSetnsMsg = "ckpt-apptainer: cannot enter the job's time namespace\n"
)

// emitStderr writes the n bytes at label to stderr.
func emitStderr(a *tinyelf.Asm, label string, n int) {
	a.MovImm(tinyelf.RDI, 2)
	a.LeaRIP(tinyelf.RSI, label)
	a.MovImm(tinyelf.RDX, uint32(n))
	a.Syscall(unix.SYS_WRITE)
}
