package ptrace

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Requests and options golang.org/x/sys/unix does not name.
const (
	reqGetSigmask           = 0x420a
	reqSetSigmask           = 0x420b
	reqGetRseqConfiguration = 0x420f
	ntX86XState             = 0x202
	maxXStateSize           = 16384
	ptraceEventStop         = 128        // PTRACE_EVENT_STOP: the stop PTRACE_INTERRUPT produces
	waitAll                 = 0x40000000 // __WALL: threads are not children in the wait sense
	defaultStopTimeout      = 10 * time.Second
	injectionTimeout        = 10 * time.Second
)

// ErrTimeout reports that a thread did not reach a ptrace-stop in time.
var ErrTimeout = errors.New("timed out waiting for the thread to stop")

// Tracer issues ptrace requests from the one OS thread it is locked to.
type Tracer struct {
	osThread int
	// seized are the threads attached to this tracer, by Seize or, for
	// threads the kernel attached on clone, by Adopt.
	seized map[int]bool
	// hold blocks all signals around each injected step (HoldSignals).
	hold bool
}

// NewTracer locks the calling goroutine to its OS thread and returns a
// Tracer bound to it. Close must be called from the same goroutine.
func NewTracer() *Tracer {
	runtime.LockOSThread()
	return &Tracer{osThread: unix.Gettid(), seized: map[int]bool{}}
}

// Close unlocks the OS thread. Tracees still attached stay attached until the
// thread exits; callers detach or kill them first.
func (t *Tracer) Close() {
	runtime.UnlockOSThread()
}

func (t *Tracer) onThread() error {
	if tid := unix.Gettid(); tid != t.osThread {
		return fmt.Errorf("ptrace request from OS thread %d, tracer is %d", tid, t.osThread)
	}
	return nil
}

// Seize attaches to tid without stopping it, with PTRACE_O_* options opts.
func (t *Tracer) Seize(tid int, opts int) error {
	if err := t.onThread(); err != nil {
		return err
	}
	if err := ptraceRaw(unix.PTRACE_SEIZE, tid, 0, uintptr(opts)); err != nil {
		return fmt.Errorf("seize %d: %w", tid, err)
	}
	t.seized[tid] = true
	return nil
}

// Adopt records a thread the kernel attached on its own (PTRACE_O_TRACECLONE).
func (t *Tracer) Adopt(tid int) { t.seized[tid] = true }

// Forget drops a thread that is gone without its exit having been
// collected through the tracer.
func (t *Tracer) Forget(tid int) { delete(t.seized, tid) }

// Seized reports whether tid is attached to this tracer.
func (t *Tracer) Seized(tid int) bool { return t.seized[tid] }

// Interrupt asks a seized thread to enter a ptrace-stop.
func (t *Tracer) Interrupt(tid int) error {
	if err := ptraceRaw(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return fmt.Errorf("interrupt %d: %w", tid, err)
	}
	return nil
}

// Detach lets tid run again, delivering sig (0 for none).
func (t *Tracer) Detach(tid int, sig int) error {
	delete(t.seized, tid)
	if err := ptraceRaw(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("detach %d: %w", tid, err)
	}
	return nil
}

// Stop is what wait reported for a stopped thread.
type Stop struct {
	Status unix.WaitStatus
}

// Signal is the stop signal (SIGTRAP for single steps and events).
func (s Stop) Signal() unix.Signal { return s.Status.StopSignal() }

// Event is the PTRACE_EVENT_* of an event stop, or 0.
func (s Stop) Event() int { return s.Status.TrapCause() }

// WaitStop waits until tid reports a stop. It polls, so that a thread that
// never stops (blocked uninterruptibly, or stopped by someone else) turns into
// an error instead of a hang.
func (t *Tracer) WaitStop(tid int, timeout time.Duration) (Stop, error) {
	if timeout == 0 {
		timeout = defaultStopTimeout
	}
	deadline := time.Now().Add(timeout)
	var ws unix.WaitStatus
	for spin := 0; ; spin++ {
		pid, err := unix.Wait4(tid, &ws, unix.WNOHANG|waitAll, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Stop{}, fmt.Errorf("wait %d: %w", tid, err)
		}
		if pid == tid {
			if ws.Exited() || ws.Signaled() {
				delete(t.seized, tid)
				return Stop{Status: ws}, fmt.Errorf("thread %d exited (status %#x)", tid, uint32(ws))
			}
			if ws.Stopped() {
				return Stop{Status: ws}, nil
			}
			continue
		}
		if time.Now().After(deadline) {
			return Stop{}, fmt.Errorf("thread %d: %w after %v", tid, ErrTimeout, timeout)
		}
		Backoff(spin)
	}
}

// Backoff waits between polls for a tracee's stop, a little longer each
// time nothing happened: yield first (an injected system call, or a traced
// program's next system call, usually comes within microseconds), then
// sleep up to a millisecond.
func Backoff(spin int) {
	switch {
	case spin < 64:
		unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	case spin < 256:
		time.Sleep(20 * time.Microsecond)
	default:
		time.Sleep(time.Millisecond)
	}
}

// GetEventMsg returns PTRACE_GETEVENTMSG of tid (the new thread's tid in
// the tracer's PID namespace after a clone event).
func (t *Tracer) GetEventMsg(tid int) (uint, error) {
	msg, err := unix.PtraceGetEventMsg(tid)
	if err != nil {
		return 0, fmt.Errorf("geteventmsg %d: %w", tid, err)
	}
	return msg, nil
}

func ptraceRaw(req int, tid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Syscall stop kinds PTRACE_GET_SYSCALL_INFO reports.
const (
	SyscallEntry = 1 // PTRACE_SYSCALL_INFO_ENTRY
	SyscallExit  = 2 // PTRACE_SYSCALL_INFO_EXIT
)

// SyscallStopKind tells whether tid, in a system call stop, is at the
// call's entry or exit. Counting stops cannot: an exec, or a stop the
// tracer did not see begin, puts the count out of step.
func (t *Tracer) SyscallStopKind(tid int) (int, error) {
	if err := t.onThread(); err != nil {
		return 0, err
	}
	var info [88]byte // struct ptrace_syscall_info
	if err := ptraceRaw(unix.PTRACE_GET_SYSCALL_INFO, tid, uintptr(len(info)), uintptr(unsafe.Pointer(&info[0]))); err != nil {
		return 0, fmt.Errorf("get syscall info %d: %w", tid, err)
	}
	return int(info[0]), nil
}
