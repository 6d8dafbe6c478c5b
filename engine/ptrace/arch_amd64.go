package ptrace

// The registers by their role. Code outside the *_amd64.go files reads and
// sets a thread's registers through these, never by their x86-64 names.

// syscallInsnLen is the length of the x86-64 `syscall` instruction.
const syscallInsnLen = 2

// PC is the address of the thread's next instruction.
func PC(r *Regs) uint64 { return r.Rip }

// SetPC makes the thread go on at pc.
func SetPC(r *Regs, pc uint64) { r.Rip = pc }

// ThreadPointer is the thread pointer (the fs base on x86-64), the address
// libc's thread control block is found from.
func ThreadPointer(r *Regs) uint64 { return r.Fs_base }

// SyscallNr is the system call a thread stopped at a system call stop is
// in; negative when it is in none.
func SyscallNr(r *Regs) int64 { return int64(r.Orig_rax) }

// SyscallArg is argument i (0 to 5) of that system call.
func SyscallArg(r *Regs, i int) uint64 {
	return [6]uint64{r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9}[i]
}

// SyscallResult is what a finished system call returned: a negative errno
// on failure.
func SyscallResult(r *Regs) int64 { return int64(r.Rax) }

// SetSyscall makes the thread enter system call nr with args when it runs
// the `syscall` instruction at pc next; no system call is in progress for
// the kernel's restart logic to act on.
func SetSyscall(r *Regs, pc uint64, nr uintptr, args [6]uint64) {
	r.Rax = uint64(nr)
	r.Orig_rax = ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = args[0], args[1], args[2], args[3], args[4], args[5]
	r.Rip = pc
}
