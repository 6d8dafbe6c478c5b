package engine

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// tracee is a /bin/sleep child held in a ptrace-stop, with a scratch area
// mapped for injected calls.
type tracee struct {
	pid int
	th  *ptrace.Thread
	rem *remote
}

// startTracee starts /bin/sleep with files on fds 3, 4, ..., seizes it
// and maps a scratch area. The child is killed when the test ends.
func startTracee(t *testing.T, tr *ptrace.Tracer, files ...*os.File) *tracee {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "1000")
	cmd.ExtraFiles = files
	return startTraceeCmd(t, tr, cmd)
}

// startTraceeCmd is startTracee for a command of the test's own.
func startTraceeCmd(t *testing.T, tr *ptrace.Tracer, cmd *exec.Cmd) *tracee {
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
	waitSleeping(t, pid)
	if err := tr.Seize(pid, unix.PTRACE_O_EXITKILL); err != nil {
		t.Fatal(err)
	}
	if err := tr.Interrupt(pid); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.WaitStop(pid, 0); err != nil {
		t.Fatal(err)
	}
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	var vdso []image.VMA
	for _, m := range maps {
		if m.Path == "[vdso]" {
			vdso = append(vdso, image.VMA{Start: m.Start, End: m.End, Kind: image.VMAVDSO})
		}
	}
	_, gadget, err := dumpVDSO(pid, vdso)
	if err != nil {
		t.Fatal(err)
	}
	th, err := tr.NewThread(pid, gadget)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 10
	addr, err := th.Call("mmap scratch", unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	return &tracee{pid: pid, th: th, rem: &remote{pid: pid, main: th, scratch: addr, size: size}}
}

// restorerFor makes a restorer working on a tracee, as the restore does
// on a stub.
func restorerFor(tr *ptrace.Tracer, c *tracee, p *image.Process) *restorer {
	log := logrus.New()
	log.SetLevel(logrus.DebugLevel)
	return &restorer{remote: *c.rem, t: tr, log: log, proc: p, threads: []*ptrace.Thread{c.th}}
}

// waitSleeping waits until pid sleeps in clock_nanosleep or nanosleep, so
// that the program has started (its libc set up, rseq registered) by the
// time the test stops it.
func waitSleeping(t *testing.T, pid int) {
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

// withAndWithout runs test twice: with kernel feature f (skipped where the
// kernel lacks it) and with f switched off, on its fallback.
func withAndWithout(t *testing.T, f kernel.Feature, test func(t *testing.T)) {
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
