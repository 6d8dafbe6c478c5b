package ptrace

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// Thread runs system calls inside one stopped tracee thread. Gadget is the
// address of a `syscall` instruction mapped executable in the tracee; Saved
// are the registers the thread had when it was taken, which every injected
// call starts from.
type Thread struct {
	t      *Tracer
	TID    int
	Gadget uint64
	Saved  Regs
	// Deferred holds signals that arrived while a call was being injected;
	// they were dequeued by the stop, so the owner re-sends them.
	Deferred []unix.Signal
}

// NewThread reads tid's registers and prepares it for injection.
// Precondition: tid is in a ptrace-stop.
func (t *Tracer) NewThread(tid int, gadget uint64) (*Thread, error) {
	r, err := t.GetRegs(tid)
	if err != nil {
		return nil, err
	}
	return &Thread{t: t, TID: tid, Gadget: gadget, Saved: r}, nil
}

// Syscall runs system call nr with args in the thread and returns the raw
// result (a negative errno on failure, as the kernel returns it).
//
// The thread's registers are set to the saved ones with rip at the gadget
// and orig_rax = -1, so the kernel applies no restart logic, and the thread
// is single-stepped over the `syscall` instruction. Event stops in between
// (a clone event when the tracee has PTRACE_O_TRACECLONE) are stepped over;
// onEvent, when not nil, sees them first.
func (th *Thread) Syscall(nr uintptr, args ...uint64) (int64, error) {
	return th.SyscallEvent(nil, nr, args...)
}

// SyscallEvent is Syscall with a callback for ptrace event stops.
func (th *Thread) SyscallEvent(onEvent func(event int) error, nr uintptr, args ...uint64) (ret int64, err error) {
	if err := th.t.onThread(); err != nil {
		return 0, err
	}
	if len(args) > 6 {
		return 0, fmt.Errorf("syscall %d: %d arguments, at most 6", nr, len(args))
	}
	r := th.Saved
	var a [6]uint64
	copy(a[:], args)
	SetSyscall(&r, th.Gadget, nr, a)
	if err := th.t.SetRegs(th.TID, &r); err != nil {
		return 0, err
	}
	if th.t.hold {
		mask, err := th.t.GetSigmask(th.TID)
		if err != nil {
			return 0, err
		}
		if err := th.t.SetSigmask(th.TID, allSignalsBlocked); err != nil {
			return 0, err
		}
		defer func() {
			if merr := th.t.SetSigmask(th.TID, mask); merr != nil && err == nil {
				err = merr
			}
		}()
	}
	for {
		if err := ptraceRaw(unix.PTRACE_SINGLESTEP, th.TID, 0, 0); err != nil {
			return 0, fmt.Errorf("inject syscall %d in %d: singlestep: %w", nr, th.TID, err)
		}
		stop, err := th.t.WaitStop(th.TID, injectionTimeout)
		if err != nil {
			return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, th.TID, err)
		}
		if ev := stop.Event(); ev != 0 {
			if onEvent != nil {
				if err := onEvent(ev); err != nil {
					return 0, err
				}
			}
			continue
		}
		sig := stop.Signal()
		switch sig {
		case unix.SIGSEGV, unix.SIGBUS, unix.SIGILL, unix.SIGFPE:
			// A fault raised by the injected step itself: stepping
			// again would fault again.
			regs, _ := th.t.GetRegs(th.TID)
			return 0, fmt.Errorf("inject syscall %d in %d: %v at pc %#x", nr, th.TID, sig, PC(&regs))
		}
		if sig != unix.SIGTRAP {
			// A signal was dequeued instead of our step completing; keep
			// it for re-delivery and step again.
			th.Deferred = append(th.Deferred, sig)
			continue
		}
		break
	}
	out, err := th.t.GetRegs(th.TID)
	if err != nil {
		return 0, err
	}
	if PC(&out) != th.Gadget+syscallInsnLen {
		return 0, fmt.Errorf("inject syscall %d in %d: stopped at %#x, expected %#x", nr, th.TID, PC(&out), th.Gadget+syscallInsnLen)
	}
	return SyscallResult(&out), nil
}

// Call is Syscall that turns a negative result into an error naming the call.
func (th *Thread) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	ret, err := th.Syscall(nr, args...)
	if err != nil {
		return 0, err
	}
	if ret < 0 && ret > -4096 {
		return 0, fmt.Errorf("%s in %d: %w", name, th.TID, syscall.Errno(-ret))
	}
	return uint64(ret), nil
}

// Restore puts the saved registers back, leaving the thread as it was taken.
func (th *Thread) Restore() error {
	return th.t.SetRegs(th.TID, &th.Saved)
}
