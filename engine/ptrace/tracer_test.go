package ptrace_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// TestInjectedCalls runs system calls in a stopped child and checks their
// results, that a failing call names itself and its errno, and that the
// thread is left with the registers it was taken with.
func TestInjectedCalls(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	c := injecttest.Start(t, tr)
	// The registers as NewThread took them, before the injected mmap of
	// the scratch area.
	before := c.Thread.Saved
	if pid, err := c.Thread.Call("getpid", unix.SYS_GETPID); err != nil || int(pid) != c.PID {
		t.Errorf("getpid in the child: %d, %v; want %d", pid, err, c.PID)
	}
	if tid, err := c.Thread.Syscall(unix.SYS_GETTID); err != nil || int(tid) != c.PID {
		t.Errorf("gettid in the child: %d, %v; want %d", tid, err, c.PID)
	}
	_, err := c.Thread.Call("close(-1)", unix.SYS_CLOSE, ^uint64(0))
	if !errors.Is(err, syscall.EBADF) || !strings.Contains(err.Error(), "close(-1)") {
		t.Errorf("close(-1): %v, want EBADF naming the call", err)
	}
	if _, err := c.Thread.Syscall(unix.SYS_GETPID, 1, 2, 3, 4, 5, 6, 7); err == nil {
		t.Error("a call with 7 arguments was run")
	}
	if err := c.Thread.Restore(); err != nil {
		t.Fatal(err)
	}
	after, err := tr.GetRegs(c.PID)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("registers after Restore differ from those the thread was taken with:\n%+v\n%+v", after, before)
	}
}

// TestRegsSigmaskAndText changes a stopped child's registers, signal mask
// and code, and reads each back.
func TestRegsSigmaskAndText(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	c := injecttest.Start(t, tr)
	regs, err := tr.GetRegs(c.PID)
	if err != nil {
		t.Fatal(err)
	}
	moved := regs
	ptrace.SetPC(&moved, c.Gadget)
	if err := tr.SetRegs(c.PID, &moved); err != nil {
		t.Fatal(err)
	}
	if got, _ := tr.GetRegs(c.PID); ptrace.PC(&got) != c.Gadget {
		t.Errorf("pc %#x after SetRegs, want %#x", ptrace.PC(&got), c.Gadget)
	}
	if err := tr.SetRegs(c.PID, &regs); err != nil {
		t.Fatal(err)
	}

	const mask = 1<<(unix.SIGUSR1-1) | 1<<(unix.SIGHUP-1)
	if err := tr.SetSigmask(c.PID, mask); err != nil {
		t.Fatal(err)
	}
	if got, err := tr.GetSigmask(c.PID); err != nil || got != mask {
		t.Errorf("sigmask %#x, %v; want %#x", got, err, mask)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.PID))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), fmt.Sprintf("SigBlk:\t%016x", mask)) {
		t.Errorf("/proc status does not show the mask %#x", mask)
	}

	// A page of the scratch area, written through ptrace.
	text := []byte("written by PokeText")
	if err := tr.PokeText(c.PID, uintptr(c.Proc.Scratch+1), text); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(text)+2)
	if err := c.Proc.Read(c.Proc.Scratch, got); err != nil {
		t.Fatal(err)
	}
	if string(got[1:len(text)+1]) != string(text) || got[0] != 0 || got[len(text)+1] != 0 {
		t.Errorf("memory after PokeText: %q", got)
	}
}

// TestSyscallArgs checks the registers' roles as the engine reads them
// from a thread stopped in a known system call.
func TestSyscallArgs(t *testing.T) {
	var r ptrace.Regs
	ptrace.SetSyscall(&r, 0x1000, unix.SYS_MMAP, [6]uint64{1, 2, 3, 4, 5, 6})
	if ptrace.PC(&r) != 0x1000 || ptrace.SyscallNr(&r) >= 0 || ptrace.SyscallResult(&r) != unix.SYS_MMAP {
		t.Errorf("after SetSyscall: pc %#x nr %d result %d", ptrace.PC(&r), ptrace.SyscallNr(&r), ptrace.SyscallResult(&r))
	}
	// The kernel copies the number to orig_rax when the call is entered.
	r.Orig_rax = unix.SYS_MMAP
	for i := 0; i < 6; i++ {
		if got := ptrace.SyscallArg(&r, i); got != uint64(i+1) {
			t.Errorf("argument %d: %d, want %d", i, got, i+1)
		}
	}
}

// TestWaitStopTimesOut checks that waiting for a thread that does not stop
// ends with ErrTimeout, and that Interrupt then stops it.
func TestWaitStopTimesOut(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to trace a child")
	}
	tr := ptrace.NewTracer()
	defer tr.Close()
	cmd := exec.Command("/bin/sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() {
		unix.Kill(pid, unix.SIGKILL)
		cmd.Wait()
	}()
	injecttest.WaitSleeping(t, pid)
	if err := tr.Seize(pid, unix.PTRACE_O_EXITKILL); err != nil {
		t.Fatal(err)
	}
	if !tr.Seized(pid) || tr.Attached() != 1 {
		t.Fatalf("seized %v, %d attached; want the child alone", tr.Seized(pid), tr.Attached())
	}
	if _, err := tr.WaitStop(pid, 50*time.Millisecond); !errors.Is(err, ptrace.ErrTimeout) {
		t.Fatalf("waiting for a running thread: %v, want ErrTimeout", err)
	}
	if err := tr.Interrupt(pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.WaitStop(pid, 5*time.Second); err != nil {
		t.Fatalf("after Interrupt: %v", err)
	}
	if err := tr.Detach(pid, 0); err != nil {
		t.Fatal(err)
	}
	if tr.Seized(pid) {
		t.Error("still seized after Detach")
	}
}
