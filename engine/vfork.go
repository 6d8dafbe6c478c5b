package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// A process between vfork and exec runs on its parent's memory and stack,
// and the parent sleeps in the kernel until the child has exec'd or exited:
// no stop of the parent can be had while the child is held, and no image of
// either would be whole. Shells fork their commands that way (dash, busybox
// in a container), so a checkpoint now and then lands in that window. The
// stop is then undone and tried again a moment later; the window is
// normally well under a millisecond.

// vforkWait bounds the retries: a child that shares its parent's memory for
// longer is taken as made with clone(CLONE_VM), or stuck, which is not
// supported. (A variable for the tests.)
var vforkWait = 2 * time.Second

// vforkError names a process that shares its memory with its parent.
type vforkError struct {
	child, parent int
	comm          string
}

func (e *vforkError) Error() string {
	return fmt.Sprintf("host pid %d (%s) shares its memory with its parent, host pid %d (between vfork and exec, or made with clone(CLONE_VM))", e.child, e.comm, e.parent)
}

// sharedVM returns the first seized process whose seized parent shares its
// address space, or nil. Without kcmp (a kernel built without
// CONFIG_KCMP) nothing is found, and a vfork parent shows as a thread that
// does not stop.
func (j *stoppedJob) sharedVM() *vforkError {
	for _, sp := range j.procs {
		if sp.zombie || len(sp.threads) == 0 {
			continue
		}
		st, err := proc.ReadStat(sp.pid)
		if err != nil {
			continue
		}
		parent := j.byPID[st.PPID]
		if parent == nil || parent.zombie || len(parent.threads) == 0 {
			continue
		}
		if sameVM(sp.pid, parent.pid) {
			return &vforkError{child: sp.pid, parent: parent.pid, comm: st.Comm}
		}
	}
	return nil
}

// kcmpVM is KCMP_VM: compare two processes' address spaces.
const kcmpVM = 1

// sameVM reports whether processes a and b share one address space.
func sameVM(a, b int) bool {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	return errno == 0 && r == 0
}

// retryVfork calls stop until it brings the job to a stop that does not
// fall into a vfork window. A try that does undoes its stop, and its
// release waits for the vfork parent (see stoppedJob.release), so the next
// try normally finds the child done. It gives up after vforkWait, or when
// the parent could not be released (it stays attached to t until the
// tracer's thread exits).
func retryVfork(t *ptrace.Tracer, stop func() (*stoppedJob, error), log logrus.FieldLogger) (*stoppedJob, error) {
	start := time.Now()
	for try := 1; ; try++ {
		j, err := stop()
		var vf *vforkError
		if !errors.As(err, &vf) {
			return j, err
		}
		if t.Attached() > 0 || time.Since(start) > vforkWait {
			return nil, fmt.Errorf("%w, for more than %v: a process in that state cannot be checkpointed (not supported)", err, time.Since(start).Round(time.Millisecond))
		}
		log.Debugf("%v; stopping the job again", err)
		time.Sleep(min(time.Duration(try)*time.Millisecond, 20*time.Millisecond))
	}
}
