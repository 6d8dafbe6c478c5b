package namespaces

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// A job's processes live in a time namespace of their own, whose offsets
// keep CLOCK_MONOTONIC and CLOCK_BOOTTIME going on across a restart. A
// thread that unshares CLONE_NEWTIME puts its future children there; on
// kernels from 6.3 the spawner thread does that and forks as usual. Older
// kernels refuse a vfork child of such a thread, and Go starts every child
// with vfork: there init makes the namespace on a thread that then exits,
// keeps a descriptor of it, and starts each task through a small program
// that joins it with setns once it has exec'd (timensEntryELF).

// enterTimeNamespace makes the calling thread's future children live in a
// new time namespace with the given clock offsets.
func enterTimeNamespace(monotonic, boottime time.Duration) error {
	if err := unix.Unshare(unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("create time namespace: %w", err)
	}
	// /proc/self names the thread group leader; the offsets belong to the
	// namespace this thread made, reached through its own tid.
	path := fmt.Sprintf("/proc/%d/timens_offsets", unix.Gettid())
	text := timensLine("monotonic", monotonic) + timensLine("boottime", boottime)
	if err := os.WriteFile(path, []byte(text), 0); err != nil {
		return fmt.Errorf("write time namespace offsets %q: %w", strings.TrimSpace(text), err)
	}
	return nil
}

// timensLine formats one line of timens_offsets: seconds, then a
// non-negative nanosecond part, as the kernel wants even for negative offsets.
func timensLine(clock string, d time.Duration) string {
	sec := int64(d / time.Second)
	nsec := int64(d % time.Second)
	if nsec < 0 {
		sec--
		nsec += int64(time.Second)
	}
	return fmt.Sprintf("%s %d %d\n", clock, sec, nsec)
}

// makeTimeNamespace creates the job's time namespace for the entry program:
// on a thread of its own, which is left to exit with its goroutine (a
// thread whose children go to another time namespace may not even start a
// thread on such kernels), and keeps a descriptor of it in s.timens.
func (s *initServer) makeTimeNamespace(monotonic, boottime time.Duration) error {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the goroutine's end takes the thread with it.
		runtime.LockOSThread()
		if err := enterTimeNamespace(monotonic, boottime); err != nil {
			done <- result{-1, err}
			return
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/time_for_children", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			err = fmt.Errorf("open the new time namespace: %w", err)
		}
		done <- result{fd, err}
	}()
	r := <-done
	if r.err != nil {
		return r.err
	}
	job, err := kernel.ExecMemfd("ckpt-timens", timensEntryELF(true))
	if err != nil {
		unix.Close(r.fd)
		return err
	}
	stub, err := kernel.ExecMemfd("ckpt-timens", timensEntryELF(false))
	if err != nil {
		job.Close()
		unix.Close(r.fd)
		return err
	}
	s.timens, s.timensJob, s.timensStub = r.fd, job, stub
	return nil
}

// throughTimensEntry makes attr start the entry program instead of path,
// with the time namespace on its fd 3, and returns what to execute: the
// program, which runs path with argv in the namespace.
func (s *initServer) throughTimensEntry(attr *syscall.ProcAttr, entry *os.File, path string, argv []string) (string, []string) {
	files := append([]uintptr{0, 1, 2, uintptr(s.timens)}, attr.Files[3:]...)
	attr.Files = files
	return kernel.ProcPath(entry), append([]string{"ckpt-timens", path}, argv...)
}

// stubExecTimeout bounds the wait for the entry program to exec a stub.
const stubExecTimeout = 10 * time.Second

// waitExec waits until process pid runs the executable in f, which the
// time namespace entry program execs once it has joined the namespace.
func waitExec(pid int, f *os.File, timeout time.Duration) error {
	var want unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &want); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	exe := fmt.Sprintf("/proc/%d/exe", pid)
	for {
		var st unix.Stat_t
		err := unix.Stat(exe, &st)
		if err == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			return nil
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("wait for the stub's exec: %w", err)
		}
		if errors.Is(err, unix.ENOENT) || time.Now().After(deadline) {
			// Gone: the entry program failed and said why on stderr.
			return fmt.Errorf("the stub did not start in the job's time namespace within %v", timeout)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
