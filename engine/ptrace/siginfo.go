package ptrace

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SiginfoSize is sizeof(siginfo_t).
const SiginfoSize = 128

const (
	reqPeekSiginfo    = 0x4209 // PTRACE_PEEKSIGINFO
	peekSiginfoShared = 1      // PTRACE_PEEKSIGINFO_SHARED
	peekSiginfoBatch  = 32
	allSignalsBlocked = ^uint64(0)
)

// peekSiginfoArgs is struct ptrace_peeksiginfo_args.
type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// PeekSiginfo returns the signals queued for tid, oldest first, as raw
// siginfo_t records; with shared set, those queued for its whole thread
// group instead. Reading leaves the queues as they are.
func (t *Tracer) PeekSiginfo(tid int, shared bool) ([][]byte, error) {
	if err := t.onThread(); err != nil {
		return nil, err
	}
	args := peekSiginfoArgs{Nr: peekSiginfoBatch}
	if shared {
		args.Flags = peekSiginfoShared
	}
	buf := make([]byte, peekSiginfoBatch*SiginfoSize)
	var out [][]byte
	for {
		n, _, e := unix.Syscall6(unix.SYS_PTRACE, reqPeekSiginfo, uintptr(tid),
			uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
		if e != 0 {
			return nil, fmt.Errorf("peeksiginfo %d (shared %v): %w", tid, shared, e)
		}
		if n == 0 {
			return out, nil
		}
		for i := uintptr(0); i < n; i++ {
			out = append(out, append([]byte(nil), buf[i*SiginfoSize:(i+1)*SiginfoSize]...))
		}
		args.Off += uint64(n)
	}
}

// HoldSignals makes every later injected call run with all signals blocked
// in the stepped thread, the thread's own mask being put back after the
// step. Without it, a signal queued for a stopped thread (a timer that
// fired, a signal re-queued by a restore) turns the step into a
// signal-delivery-stop, which takes the signal off its queue for good.
//
// Only for threads that are not inside a system call that swapped its
// signal mask (ppoll, pselect, sigsuspend, epoll_pwait): setting the mask
// with ptrace cancels the kernel's pending restore of the original one. A
// restore's threads (the stub and threads it cloned) never are.
func (t *Tracer) HoldSignals(on bool) { t.hold = on }
