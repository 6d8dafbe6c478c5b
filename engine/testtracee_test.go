package engine

import (
	"os"
	"os/exec"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
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
	if os.Getuid() != 0 {
		t.Skip("needs root to trace a child and read its /proc entries freely")
	}
	cmd := exec.Command("/bin/sleep", "1000")
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		cmd.Wait()
	})
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
