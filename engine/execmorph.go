package engine

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// execExe makes a container's stub run the image's executable and turns
// it back into a stub, so that its /proc/pid/exe names the executable.
//
// Pointing the exe link at a file (prctl PR_SET_MM_MAP's exe_fd) needs
// CAP_CHECKPOINT_RESTORE in the process's user namespace, which a process
// the container runtime starts does not have; and programs use the link
// (busybox's shell runs its applets through /proc/self/exe). An exec sets
// it like any exec does. The new program never runs: at the exec stop a
// `syscall; int3` gadget is written at its entry point, the stub's code
// and scratch area are mapped back where they were, and the memory phase
// later removes everything the exec mapped.
func (r *restorer) execExe() error {
	path := r.proc.Exe.Path
	if err := r.t.SetOptions(r.PID, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK|unix.PTRACE_O_TRACEEXEC); err != nil {
		return err
	}
	if err := r.exec(path, []string{path}, nil); err != nil {
		return fmt.Errorf("in the container: %w", err)
	}
	// The exec stop comes before the system call's exit; one step
	// finishes the exit and stops before the program's first instruction.
	if err := r.t.SingleStep(r.PID); err != nil {
		return fmt.Errorf("exec %s: step: %w", path, err)
	}
	if _, err := r.t.WaitStop(r.PID, 0); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	at, err := r.t.GetRegs(r.PID)
	if err != nil {
		return err
	}
	entry := ptrace.PC(&at)
	l := r.layout
	if err := checkStubRoom(r.PID, entry, l.Base, l.End); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	if err := r.t.PokeText(r.PID, uintptr(entry), append(inject.SyscallInsn, inject.BreakInsn...)); err != nil {
		return fmt.Errorf("exec %s: write gadget: %w", path, err)
	}
	tmp, err := r.t.NewThread(r.PID, entry)
	if err != nil {
		return err
	}
	r.Main = tmp
	if err := r.unmapStubFile(); err != nil {
		return fmt.Errorf("exec %s: stub back: %w", path, err)
	}
	ptrace.SetPC(&at, l.Entry)
	if err := r.t.SetRegs(r.PID, &at); err != nil {
		return err
	}
	if r.Main, err = r.t.NewThread(r.PID, l.Gadget); err != nil {
		return err
	}
	return nil
}

// exec injects execve(path, argv, env) into the stub and waits for its
// exec stop (the tracee needs PTRACE_O_TRACEEXEC). A failed exec returns
// to the stub's breakpoint with the error as the call's result.
func (r *restorer) exec(path string, argv, env []string) error {
	pathAddr, argvAddr, envAddr, err := r.putExecArgs(path, argv, env)
	if err != nil {
		return err
	}
	regs := r.Main.Saved
	ptrace.SetSyscall(&regs, r.Main.Gadget, unix.SYS_EXECVE, [6]uint64{pathAddr, argvAddr, envAddr})
	if err := r.t.SetRegs(r.PID, &regs); err != nil {
		return err
	}
	if err := r.t.Cont(r.PID, 0); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	st, err := r.t.WaitStop(r.PID, startTimeout)
	if err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	if st.Event() == unix.PTRACE_EVENT_EXEC {
		return nil
	}
	if after, rerr := r.t.GetRegs(r.PID); rerr == nil && ptrace.SyscallResult(&after) < 0 {
		return fmt.Errorf("exec %s: %w", path, unix.Errno(-ptrace.SyscallResult(&after)))
	}
	return fmt.Errorf("exec %s: stopped with %v instead", path, st.Signal())
}

// checkStubRoom refuses an exec whose program landed on the page the
// stub's area would replace while the gadget there is in use.
func checkStubRoom(pid int, entry, base, end uint64) error {
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.Start <= entry && entry < m.End && m.Start < end && base < m.End {
			return fmt.Errorf("the program's entry point %#x lies in the restore stub's area %#x-%#x", entry, base, end)
		}
	}
	return nil
}
