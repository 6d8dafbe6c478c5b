package image

// Regs mirrors struct user_regs_struct on x86-64. Field names follow
// golang.org/x/sys/unix.PtraceRegs so the two convert directly.
type Regs struct {
	R15, R14, R13, R12, Rbp, Rbx, R11, R10 uint64
	R9, R8, Rax, Rcx, Rdx, Rsi, Rdi        uint64
	Orig_rax, Rip, Cs, Eflags, Rsp, Ss     uint64
	Fs_base, Gs_base, Ds, Es, Fs, Gs       uint64
}

// PC is the address the thread resumes at.
func (r *Regs) PC() uint64 { return r.Rip }
