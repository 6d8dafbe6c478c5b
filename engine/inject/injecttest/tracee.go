// Package injecttest starts traced children for tests of code that runs
// system calls in a stopped process.
package injecttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// ScratchSize is the size of the scratch area mapped in a Tracee.
const ScratchSize = 64 << 10

// Tracee is a child held in a ptrace-stop, with a scratch area mapped for
// injected calls.
type Tracee struct {
	PID    int
	Thread *ptrace.Thread
	Proc   *inject.Process
	// Gadget is the address of the `syscall` instruction the calls use.
	Gadget uint64
}

// Start starts /bin/sleep with files on fds 3, 4, ..., seizes it and maps
// a scratch area. The child is killed when the test ends.
func Start(t testing.TB, tr *ptrace.Tracer, files ...*os.File) *Tracee {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "1000")
	cmd.ExtraFiles = files
	return StartCmd(t, tr, cmd)
}

// StartCmd is Start for a command of the test's own, which must go to
// sleep (nanosleep or clock_nanosleep) once it has set itself up.
func StartCmd(t testing.TB, tr *ptrace.Tracer, cmd *exec.Cmd) *Tracee {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to trace a child and read its /proc entries freely")
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		cmd.Wait()
	})
	WaitSleeping(t, pid)
	if err := tr.Seize(pid, unix.PTRACE_O_EXITKILL); err != nil {
		t.Fatal(err)
	}
	if err := tr.Interrupt(pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.WaitStop(pid, 0); err != nil {
		t.Fatal(err)
	}
	gadget, err := vdsoSyscall(pid)
	if err != nil {
		t.Fatal(err)
	}
	th, err := tr.NewThread(pid, gadget)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := th.Call("mmap scratch", unix.SYS_MMAP, 0, ScratchSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	return &Tracee{PID: pid, Thread: th, Gadget: gadget,
		Proc: &inject.Process{PID: pid, Main: th, Scratch: addr, Size: ScratchSize}}
}

// vdsoSyscall finds a `syscall` instruction in the vDSO of pid.
func vdsoSyscall(pid int) (uint64, error) {
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		return 0, err
	}
	for _, m := range maps {
		if m.Path != "[vdso]" {
			continue
		}
		code := make([]byte, m.End-m.Start)
		if err := (&inject.Process{PID: pid}).Read(m.Start, code); err != nil {
			return 0, err
		}
		if i := bytes.Index(code, inject.SyscallInsn); i >= 0 {
			return m.Start + uint64(i), nil
		}
	}
	return 0, fmt.Errorf("pid %d: no syscall instruction in a vdso", pid)
}

// WaitSleeping waits until pid sleeps in clock_nanosleep or nanosleep, so
// that the program has started (its libc set up, rseq registered) by the
// time the test stops it.
func WaitSleeping(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		if f := strings.Fields(string(b)); len(f) > 0 && (f[0] == "230" || f[0] == "35") {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("pid %d did not go to sleep within 5 s", pid)
}

// WithAndWithout runs test twice: with kernel feature f (skipped where the
// kernel lacks it) and with f switched off, on its fallback.
func WithAndWithout(t *testing.T, f kernel.Feature, test func(t *testing.T)) {
	t.Run("with "+string(f), func(t *testing.T) {
		if !kernel.Has(f) {
			t.Skipf("no %s here", f)
		}
		test(t)
	})
	t.Run("without "+string(f), func(t *testing.T) {
		kernel.Adopt(kernel.Current().Without(f))
		t.Cleanup(func() { kernel.Adopt(nil) })
		test(t)
	})
}

// FDCount is the number of descriptors pid has open.
func FDCount(t testing.TB, pid int) int {
	t.Helper()
	fds, err := proc.ReadFDLinks(pid)
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}
