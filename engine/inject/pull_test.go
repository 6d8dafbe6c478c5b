package inject_test

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// TestPullAndPushFD moves descriptors out of and into a stopped process,
// with pidfd_getfd and with the SCM_RIGHTS fallback, and checks that each
// copy shares the open file description and that the process is left with
// the descriptors it had.
func TestPullAndPushFD(t *testing.T) {
	injecttest.WithAndWithout(t, kernel.PidfdGetfd, func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		tr := ptrace.NewTracer()
		defer tr.Close()
		c := injecttest.Start(t, tr, w) // the write end is the tracee's fd 3
		w.Close()
		before := injecttest.FDCount(t, c.PID)

		local, err := c.Proc.PullFD(3)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(local, []byte("pulled")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, _ := r.Read(buf)
		if string(buf[:n]) != "pulled" {
			t.Errorf("read %q through the pipe, want %q", buf[:n], "pulled")
		}
		if fl, err := unix.FcntlInt(uintptr(local), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("pulled descriptor flags %#x, %v: want close-on-exec", fl, err)
		}

		got, err := c.Proc.PushFDs([]int{local})
		unix.Close(local)
		if err != nil {
			t.Fatal(err)
		}
		if after := injecttest.FDCount(t, c.PID); after != before+1 {
			t.Errorf("the process has %d descriptors, had %d: want exactly the pushed one more", after, before)
		}
		if !inject.SameOpenFile(c.PID, 3, c.PID, int(got[0])) {
			t.Errorf("pushed fd %d does not share fd 3's open file description", got[0])
		}
	})
}
