package engine

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// TestPullAndPushFD moves descriptors out of and into a stopped process,
// with pidfd_getfd and with the SCM_RIGHTS fallback, and checks that each
// copy shares the open file description and that the process is left with
// the descriptors it had.
func TestPullAndPushFD(t *testing.T) {
	withAndWithout(t, kernel.PidfdGetfd, func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		tr := ptrace.NewTracer()
		defer tr.Close()
		c := startTracee(t, tr, w) // the write end is the tracee's fd 3
		w.Close()
		before := fdCount(t, c.pid)

		local, err := c.rem.pullFD(3)
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

		got, err := c.rem.pushFDs([]int{local})
		unix.Close(local)
		if err != nil {
			t.Fatal(err)
		}
		if after := fdCount(t, c.pid); after != before+1 {
			t.Errorf("the process has %d descriptors, had %d: want exactly the pushed one more", after, before)
		}
		if !sameOpenFile(c.pid, 3, c.pid, int(got[0])) {
			t.Errorf("pushed fd %d does not share fd 3's open file description", got[0])
		}
	})
}

func TestSendFDRefusesOtherNetNamespace(t *testing.T) {
	err := sameNetNamespace(os.Getpid())
	if err != nil {
		t.Fatalf("own namespace: %v", err)
	}
	if err := sameNetNamespace(1 << 30); err == nil {
		t.Errorf("a process that does not exist passed")
	}
}

func TestParseFDMessage(t *testing.T) {
	p, q, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer q.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	if err := unix.SetsockoptInt(pair[1], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(int(p.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	fd, err := receiveFD(pair[1], os.Getpid(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if !sameOpenFile(os.Getpid(), fd, os.Getpid(), int(p.Fd())) {
		t.Errorf("received fd %d is not the pipe sent", fd)
	}
	// A datagram whose sender is not the process asked is dropped.
	if err := unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(int(p.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := receiveFD(pair[1], 1, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no descriptor") {
		t.Errorf("a stranger's descriptor was taken: %v", err)
	}
}

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	fds, err := proc.ReadFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}
