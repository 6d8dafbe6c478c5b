package engine

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

const (
	nSignals       = 64
	sigactionSize  = 32 // struct kernel_sigaction on x86-64
	sigsetSize     = 8
	itimervalSize  = 32
	itimerNumTypes = 3 // ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF
)

func putU32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
func putU64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

// dumpSignals records every signal's disposition and the interval timers,
// which only the process itself can read: both are injected calls.
func dumpSignals(rem *remote, hostPID int, p *image.Process) error {
	if timers, err := os.ReadFile(fmt.Sprintf("/proc/%d/timers", hostPID)); err == nil && strings.TrimSpace(string(timers)) != "" {
		return fmt.Errorf("pid %d has POSIX timers (timer_create): not supported yet", p.PID)
	}
	addr, err := rem.scratchAt(0, sigactionSize)
	if err != nil {
		return err
	}
	buf := make([]byte, sigactionSize)
	le := binary.LittleEndian
	for sig := 1; sig <= nSignals; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		if _, err := rem.main.Call(fmt.Sprintf("rt_sigaction(%d)", sig), unix.SYS_RT_SIGACTION, uint64(sig), 0, addr, sigsetSize); err != nil {
			return err
		}
		if err := rem.read(addr, buf); err != nil {
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
		if _, err := rem.main.Call("getitimer", unix.SYS_GETITIMER, uint64(which), addr); err != nil {
			return err
		}
		if err := rem.read(addr, tv); err != nil {
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
	addr, err := r.scratchAt(0, sigactionSize)
	if err != nil {
		return err
	}
	buf := make([]byte, sigactionSize)
	for _, sa := range p.Sigactions {
		putU64(buf[0:], sa.Handler)
		putU64(buf[8:], sa.Flags)
		putU64(buf[16:], sa.Restorer)
		putU64(buf[24:], sa.Mask)
		if err := r.write(addr, buf); err != nil {
			return err
		}
		if _, err := r.main.Call(fmt.Sprintf("rt_sigaction(%d)", sa.Signal), unix.SYS_RT_SIGACTION, uint64(sa.Signal), addr, 0, sigsetSize); err != nil {
			return err
		}
	}
	tv := make([]byte, itimervalSize)
	for _, it := range p.Itimers {
		putU64(tv[0:], uint64(it.IntervalSec))
		putU64(tv[8:], uint64(it.IntervalUs))
		putU64(tv[16:], uint64(it.ValueSec))
		putU64(tv[24:], uint64(it.ValueUs))
		if err := r.write(addr, tv); err != nil {
			return err
		}
		if _, err := r.main.Call("setitimer", unix.SYS_SETITIMER, uint64(it.Which), addr, 0); err != nil {
			return err
		}
	}
	return nil
}
