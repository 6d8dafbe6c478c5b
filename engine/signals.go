package engine

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

const (
	nSignals       = 64
	sigactionSize  = 32 // struct kernel_sigaction on x86-64
	itimervalSize  = 32
	itimerNumTypes = 3 // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
)

// dumpSignals records every signal's disposition, the interval timers and
// the POSIX timers, which only the process itself can read: all are
// injected calls.
func dumpSignals(rem *inject.Process, hostPID int, p *image.Process) error {
	if err := dumpPosixTimers(rem, hostPID, p); err != nil {
		return err
	}
	addr, err := rem.ScratchAt(0, sigactionSize)
	if err != nil {
		return err
	}
	buf := make([]byte, sigactionSize)
	le := binary.LittleEndian
	for sig := 1; sig <= nSignals; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if _, err := rem.Main.Call(fmt.Sprintf("rt_sigaction(%d)", sig), unix.SYS_RT_SIGACTION, uint64(sig), 0, addr, abi.SigsetSize); err != nil {
			return err
		}
		if err := rem.Read(addr, buf); err != nil {
			return err
		}
		sa := image.Sigaction{Signal: sig, Handler: le.Uint64(buf[0:]), Flags: le.Uint64(buf[8:]), Restorer: le.Uint64(buf[16:]), Mask: le.Uint64(buf[24:])}
		if sa.Handler == 0 && sa.Flags == 0 && sa.Mask == 0 {
			continue // SIG_DFL with nothing else set: the stub has that already
		}
		p.Sigactions = append(p.Sigactions, sa)
	}
	tv := make([]byte, itimervalSize)
	for which := 0; which < itimerNumTypes; which++ {
		if _, err := rem.Main.Call("getitimer", unix.SYS_GETITIMER, uint64(which), addr); err != nil {
			return err
		}
		if err := rem.Read(addr, tv); err != nil {
			return err
		}
		it := image.Itimer{Which: which,
			IntervalSec: int64(le.Uint64(tv[0:])), IntervalUs: int64(le.Uint64(tv[8:])),
			ValueSec: int64(le.Uint64(tv[16:])), ValueUs: int64(le.Uint64(tv[24:]))}
		if it.ValueSec != 0 || it.ValueUs != 0 {
			p.Itimers = append(p.Itimers, it)
		}
	}
	return nil
}

// restoreSignals installs the recorded dispositions and re-arms interval
// timers with the time they had left.
func (r *restorer) restoreSignals(p *image.Process) error {
	// A re-armed timer may fire while the restore still steps the
	// process; the signal must stay queued, not be taken by a step.
	r.t.HoldSignals(true)
	addr, err := r.ScratchAt(0, sigactionSize)
	if err != nil {
		return err
	}
	buf := make([]byte, sigactionSize)
	for _, sa := range p.Sigactions {
		abi.PutU64(buf[0:], sa.Handler)
		abi.PutU64(buf[8:], sa.Flags)
		abi.PutU64(buf[16:], sa.Restorer)
		abi.PutU64(buf[24:], sa.Mask)
		if err := r.Write(addr, buf); err != nil {
			return err
		}
		if _, err := r.Main.Call(fmt.Sprintf("rt_sigaction(%d)", sa.Signal), unix.SYS_RT_SIGACTION, uint64(sa.Signal), addr, 0, abi.SigsetSize); err != nil {
			return err
		}
	}
	tv := make([]byte, itimervalSize)
	for _, it := range p.Itimers {
		abi.PutU64(tv[0:], uint64(it.IntervalSec))
		abi.PutU64(tv[8:], uint64(it.IntervalUs))
		abi.PutU64(tv[16:], uint64(it.ValueSec))
		abi.PutU64(tv[24:], uint64(it.ValueUs))
		if err := r.Write(addr, tv); err != nil {
			return err
		}
		if _, err := r.Main.Call("setitimer", unix.SYS_SETITIMER, uint64(it.Which), addr, 0); err != nil {
			return err
		}
	}
	return nil
}

const siTkill int32 = -6 // SI_TKILL: sent by tkill/tgkill

// restorePending queues the signals that were pending at checkpoint time,
// with their siginfo: per thread with rt_tgsigqueueinfo, process-wide with
// rt_sigqueueinfo. Each call is injected into the thread it queues for
// (the main thread for process-wide ones): the kernel lets a thread give a
// signal to itself any si_code, including the kernel's own (SI_KERNEL,
// CLD_*, SI_TIMER), which it refuses to any other sender.
//
// Standard signals queue once, as the kernel queues them; real-time ones
// keep their count and order. Every injected step runs with all signals
// blocked (ptrace.Tracer.HoldSignals), so the signals stay queued until the
// process runs with its own masks. Precondition: every thread exists
// (restoreThreads).
func (r *restorer) restorePending(p *image.Process) error {
	if len(r.threads) != len(p.Threads) {
		return fmt.Errorf("pending signals: %d threads restored, the image has %d", len(r.threads), len(p.Threads))
	}
	r.t.HoldSignals(true)
	addr, err := r.ScratchAt(0, ptrace.SiginfoSize)
	if err != nil {
		return err
	}
	for i := range p.Threads {
		st := &p.Threads[i]
		th := r.threads[i]
		for _, si := range st.Pending {
			sig, err := checkSiginfo(si.Raw)
			if err != nil {
				return fmt.Errorf("thread %d: %w", st.TID, err)
			}
			if err := r.Write(addr, si.Raw); err != nil {
				return err
			}
			if si.Shared {
				if th != r.Main {
					return fmt.Errorf("thread %d: a process-wide signal %d is recorded on a thread that is not the main thread", st.TID, sig)
				}
				_, err = th.Call(fmt.Sprintf("rt_sigqueueinfo(%d)", sig), unix.SYS_RT_SIGQUEUEINFO, uint64(p.PID), uint64(sig), addr)
			} else {
				_, err = th.Call(fmt.Sprintf("rt_tgsigqueueinfo(%d)", sig), unix.SYS_RT_TGSIGQUEUEINFO, uint64(p.PID), uint64(st.TID), uint64(sig), addr)
			}
			if err != nil {
				return fmt.Errorf("thread %d: queue signal %d: %w", st.TID, sig, err)
			}
		}
	}
	return nil
}

// checkSiginfo returns the signal number of a raw siginfo, refusing what
// cannot be queued again: SIGKILL and SIGSTOP cannot be blocked, so the
// next injected step would act on them.
func checkSiginfo(raw []byte) (int, error) {
	if len(raw) != ptrace.SiginfoSize {
		return 0, fmt.Errorf("siginfo of %d bytes, want %d", len(raw), ptrace.SiginfoSize)
	}
	sig := int(int32(binary.LittleEndian.Uint32(raw)))
	switch {
	case sig <= 0 || sig > nSignals:
		return 0, fmt.Errorf("siginfo with signal number %d", sig)
	case sig == int(unix.SIGKILL), sig == int(unix.SIGSTOP):
		return 0, fmt.Errorf("pending %v: queueing it again is not supported", unix.Signal(sig))
	}
	return sig, nil
}

// tkillSiginfo is the siginfo tgkill gives a signal sent by this process,
// as the receiver sees it.
func tkillSiginfo(sig unix.Signal) []byte {
	b := make([]byte, ptrace.SiginfoSize)
	abi.PutU32(b[0:], uint32(sig))
	code := siTkill
	abi.PutU32(b[8:], uint32(code))
	// si_pid (at 16) stays 0: the supervisor is outside the job's PID
	// namespace.
	abi.PutU32(b[20:], uint32(os.Getuid()))
	return b
}
