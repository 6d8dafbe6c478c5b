package ptrace

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// Requests and options golang.org/x/sys/unix does not name.
const (
	reqGetSigmask           = 0x420a
	reqSetSigmask           = 0x420b
	reqGetRseqConfiguration = 0x420f
	ntX86XState             = 0x202
	// MaxXStateSize is the largest XSAVE area GetXState reads.
	MaxXStateSize      = 16384
	ptraceEventStop    = 128        // PTRACE_EVENT_STOP: the stop PTRACE_INTERRUPT produces
	waitAll            = 0x40000000 // __WALL: threads are not children in the wait sense
	defaultStopTimeout = 10 * time.Second
	injectionTimeout   = 10 * time.Second
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
	return onThisThread()
}

// onThisThread returns a tracer bound to the calling, locked, OS thread.
func onThisThread() *Tracer {
	return &Tracer{osThread: unix.Gettid(), seized: map[int]bool{}}
}

// Run calls fn with a tracer of its own, on a goroutine and an OS thread
// that serve fn alone. Threads fn leaves attached, when it could not bring
// them to a stop to detach them (one waiting on a vfork child that never
// got to exec), are let go by the kernel: the OS thread exits with the
// goroutine instead of going back to the Go runtime, and a tracer's exit
// detaches its tracees.
func Run(fn func(t *Tracer) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			done <- traceLocked(fn)
			return
		}
		// The main thread never exits (the runtime parks it instead).
		// While this goroutine holds it, a new one runs on another.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			done <- traceLocked(fn)
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
	return <-done
}

// traceLocked runs fn with a tracer on the calling goroutine's OS thread,
// locked once, and unlocks it only if fn left no tracee on it.
func traceLocked(fn func(t *Tracer) error) error {
	t := onThisThread()
	err := fn(t)
	if len(t.seized) == 0 {
		runtime.UnlockOSThread()
	}
	return err
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

// Attached is the number of threads attached to this tracer.
func (t *Tracer) Attached() int { return len(t.seized) }

// Seized reports whether tid is attached to this tracer.
func (t *Tracer) Seized(tid int) bool { return t.seized[tid] }

// Interrupt asks a seized thread to enter a ptrace-stop.
func (t *Tracer) Interrupt(tid int) error {
	if err := ptraceRaw(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return fmt.Errorf("interrupt %d: %w", tid, err)
	}
	return nil
}

// Detach lets tid run again, delivering sig (0 for none). A thread that is
// not in a ptrace-stop cannot be detached (ESRCH) and stays attached.
func (t *Tracer) Detach(tid int, sig int) error {
	if err := ptraceRaw(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); err != nil {
		if !errors.Is(err, unix.ESRCH) || !exists(tid) {
			delete(t.seized, tid)
		}
		return fmt.Errorf("detach %d: %w", tid, err)
	}
	delete(t.seized, tid)
	return nil
}

// ReapKilled waits, for at most timeout, until every attached thread has
// exited, after the caller killed them. A tracee that dies stays a zombie
// until its tracer has waited for it; so does, then, the init of its PID
// namespace, and whoever waits for that init. A thread found in a stop
// (an exit event) is continued to its end. It returns the threads left.
func (t *Tracer) ReapKilled(timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for len(t.seized) > 0 {
		for tid := range t.seized {
			var ws unix.WaitStatus
			got, err := unix.Wait4(tid, &ws, waitAll|unix.WNOHANG, nil)
			switch {
			case errors.Is(err, unix.EINTR), err == nil && got == 0:
			case err != nil, ws.Exited(), ws.Signaled():
				// ECHILD: released already.
				delete(t.seized, tid)
			case ws.Stopped():
				ptraceRaw(unix.PTRACE_CONT, tid, 0, 0)
			}
		}
		if len(t.seized) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var left []int
	for tid := range t.seized {
		left = append(left, tid)
	}
	return left
}

// exists reports whether thread tid is still there (a zombie counts).
func exists(tid int) bool {
	return unix.Kill(tid, 0) != unix.ESRCH
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
	for spin := 0; ; spin++ {
		st, stopped, err := t.PollStop(tid)
		if err != nil || stopped {
			return st, err
		}
		if time.Now().After(deadline) {
			return Stop{}, fmt.Errorf("thread %d: %w after %v", tid, ErrTimeout, timeout)
		}
		Backoff(spin)
	}
}

// PollStop collects a stop tid has reported, without waiting: stopped is
// false when there is none yet. A thread that has exited is an error.
func (t *Tracer) PollStop(tid int) (st Stop, stopped bool, err error) {
	var ws unix.WaitStatus
	for {
		pid, err := unix.Wait4(tid, &ws, unix.WNOHANG|waitAll, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Stop{}, false, fmt.Errorf("wait %d: %w", tid, err)
		}
		if pid != tid {
			return Stop{}, false, nil
		}
		if ws.Exited() || ws.Signaled() {
			delete(t.seized, tid)
			return Stop{Status: ws}, false, fmt.Errorf("thread %d exited (status %#x)", tid, uint32(ws))
		}
		if ws.Stopped() {
			return Stop{Status: ws}, true, nil
		}
		// A continued report: poll again.
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
// tracer did not see begin, puts the count out of step. Kernels without
// PTRACE_GET_SYSCALL_INFO (before 5.3) are answered from the registers
// (syscallStopKindOf), as strace did before that request.
func (t *Tracer) SyscallStopKind(tid int) (int, error) {
	if err := t.onThread(); err != nil {
		return 0, err
	}
	if !kernel.Has(kernel.PtraceSyscallInfo) {
		regs, err := t.GetRegs(tid)
		if err != nil {
			return 0, err
		}
		return syscallStopKindOf(&regs), nil
	}
	var info [88]byte // struct ptrace_syscall_info
	if err := ptraceRaw(unix.PTRACE_GET_SYSCALL_INFO, tid, uintptr(len(info)), uintptr(unsafe.Pointer(&info[0]))); err != nil {
		return 0, fmt.Errorf("get syscall info %d: %w", tid, err)
	}
	return int(info[0]), nil
}
