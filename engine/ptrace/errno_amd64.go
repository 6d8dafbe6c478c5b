package ptrace

import "golang.org/x/sys/unix"

// Kernel-internal error codes. A thread interrupted inside a system call
// shows one of them in rax while it sits in a ptrace-stop; user code never
// sees them, because the kernel turns them into a restart or into EINTR on
// the way back to user space. A restore has to make that decision itself.
const (
	ERESTARTSYS           = 512
	ERESTARTNOINTR        = 513
	ERESTARTNOHAND        = 514
	ERESTART_RESTARTBLOCK = 516
)

// reissuedCalls are the calls that park their remaining work in a restart
// block and may be issued again from their original arguments: a sleep or
// wait that starts over from its full timeout (exact for absolute ones).
// The kernel's restart block does not survive a restore, and EINTR would
// surprise a program that installed no signal handler.
var reissuedCalls = map[uint64]bool{
	unix.SYS_NANOSLEEP:       true,
	unix.SYS_CLOCK_NANOSLEEP: true,
	unix.SYS_POLL:            true,
	unix.SYS_FUTEX:           true,
}

// ResolveRestart turns the registers of a thread that was stopped inside a
// system call into registers a fresh thread can resume with: the call is
// re-executed where the kernel would have restarted it, also where the
// kernel would have used a restart block for one of reissuedCalls, and EINTR
// is returned for any other restart block (restart_syscall itself, whose
// original arguments are gone). orig_rax is cleared so the kernel applies no
// restart logic of its own when the thread is released.
func ResolveRestart(r *Regs) {
	if int64(r.Orig_rax) >= 0 {
		switch -int64(r.Rax) {
		case ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND:
			r.Rax = r.Orig_rax
			r.Rip -= syscallInsnLen
		case ERESTART_RESTARTBLOCK:
			if reissuedCalls[r.Orig_rax] {
				r.Rax = r.Orig_rax
				r.Rip -= syscallInsnLen
				break
			}
			eintr := int64(unix.EINTR)
			r.Rax = uint64(-eintr)
		}
	}
	r.Orig_rax = ^uint64(0)
}
