package engine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

const (
	prTimerCreateRestoreIDs    = 77 // PR_TIMER_CREATE_RESTORE_IDS
	prTimerCreateRestoreIDsOff = 0  // PR_TIMER_CREATE_RESTORE_IDS_OFF
	prTimerCreateRestoreIDsOn  = 1  // PR_TIMER_CREATE_RESTORE_IDS_ON
	sigeventSize               = 64 // struct sigevent
	sigevSignal                = 0  // SIGEV_SIGNAL
	sigevNone                  = 1  // SIGEV_NONE
	sigevThread                = 2  // SIGEV_THREAD (the kernel treats it as SIGEV_SIGNAL)
	sigevThreadID              = 4  // SIGEV_THREAD_ID
	clockThreadCPUTime         = 3  // CLOCK_THREAD_CPUTIME_ID
)

// procTimer is one entry of /proc/pid/timers.
type procTimer struct {
	ID     int
	Signal int
	Value  uint64 // sigev_value
	Notify int    // SIGEV_*, SIGEV_THREAD_ID included
	Target int    // the pid or tid signalled, in the PID namespace of /proc
	Clock  int
}

// parseProcTimers parses /proc/pid/timers:
//
//	ID: 0
//	signal: 37/00000000deadbeef
//	notify: signal/tid.12559
//	ClockID: 1
func parseProcTimers(text string) ([]procTimer, error) {
	var out []procTimer
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		if !ok {
			return nil, fmt.Errorf("timers line %q: no key", line)
		}
		if k == "ID" {
			id, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("timers line %q: %w", line, err)
			}
			out = append(out, procTimer{ID: id})
			continue
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("timers line %q before the first ID", line)
		}
		t := &out[len(out)-1]
		var err error
		switch k {
		case "signal":
			sig, val, _ := strings.Cut(v, "/")
			if t.Signal, err = strconv.Atoi(sig); err == nil {
				t.Value, err = strconv.ParseUint(val, 16, 64)
			}
		case "notify":
			t.Notify, t.Target, err = parseTimerNotify(v)
		case "ClockID":
			t.Clock, err = strconv.Atoi(v)
		}
		if err != nil {
			return nil, fmt.Errorf("timers line %q: %w", line, err)
		}
	}
	return out, sc.Err()
}

// parseTimerNotify parses "signal/tid.12559": how the timer notifies, and
// whom ("pid" for the process, "tid" for one thread: SIGEV_THREAD_ID).
func parseTimerNotify(v string) (notify, target int, err error) {
	how, who, ok := strings.Cut(v, "/")
	kind, id, ok2 := strings.Cut(who, ".")
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("notify %q: want how/pid.N or how/tid.N", v)
	}
	switch how {
	case "signal":
		notify = sigevSignal
	case "none":
		notify = sigevNone
	case "thread":
		notify = sigevThread
	default:
		return 0, 0, fmt.Errorf("notify %q: unknown kind %q", v, how)
	}
	switch kind {
	case "pid":
	case "tid":
		notify |= sigevThreadID
	default:
		return 0, 0, fmt.Errorf("notify %q: unknown target %q", v, kind)
	}
	target, err = strconv.Atoi(id)
	return notify, target, err
}

// dumpPosixTimers records the process's timer_create timers: how each
// notifies from /proc/pid/timers, the time left and the period from an
// injected timer_gettime (the one call that tells them), the overrun from
// timer_getoverrun. Precondition: p.Threads is filled in.
func dumpPosixTimers(rem *inject.Process, hostPID int, p *image.Process) error {
	text, err := os.ReadFile(fmt.Sprintf("/proc/%d/timers", hostPID))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pid %d: /proc/%d/timers is missing: the kernel lacks CONFIG_CHECKPOINT_RESTORE, POSIX timers cannot be read", p.PID, hostPID)
	}
	if err != nil {
		return fmt.Errorf("pid %d: %w", p.PID, err)
	}
	timers, err := parseProcTimers(string(text))
	if err != nil {
		return fmt.Errorf("pid %d: /proc/%d/timers: %w", p.PID, hostPID, err)
	}
	sort.Slice(timers, func(i, j int) bool { return timers[i].ID < timers[j].ID })
	addr, err := rem.ScratchAt(0, abi.ItimerspecSize)
	if err != nil {
		return err
	}
	buf := make([]byte, abi.ItimerspecSize)
	le := binary.LittleEndian
	for _, pt := range timers {
		switch {
		case pt.Clock < 0:
			return fmt.Errorf("pid %d: POSIX timer %d counts the CPU time of a given process or thread (clock %d): not supported", p.PID, pt.ID, pt.Clock)
		case pt.Clock == clockThreadCPUTime && len(p.Threads) > 1:
			return fmt.Errorf("pid %d: POSIX timer %d counts one thread's CPU time in a process of %d threads: not supported", p.PID, pt.ID, len(p.Threads))
		}
		t := image.PosixTimer{ID: pt.ID, Clock: pt.Clock, Notify: pt.Notify, Signal: pt.Signal, Value: pt.Value}
		if pt.Notify&sigevThreadID != 0 {
			st, err := proc.ReadStatus(fmt.Sprintf("%d/task/%d", hostPID, pt.Target))
			if err != nil {
				return fmt.Errorf("pid %d: POSIX timer %d signals thread %d: %w", p.PID, pt.ID, pt.Target, err)
			}
			if t.TID, err = st.NSPid(); err != nil {
				return fmt.Errorf("pid %d: POSIX timer %d: %w", p.PID, pt.ID, err)
			}
		}
		if _, err := rem.Main.Call(fmt.Sprintf("timer_gettime(%d)", pt.ID), unix.SYS_TIMER_GETTIME, uint64(pt.ID), addr); err != nil {
			return fmt.Errorf("pid %d: %w", p.PID, err)
		}
		if err := rem.Read(addr, buf); err != nil {
			return err
		}
		t.IntervalSec, t.IntervalNsec = int64(le.Uint64(buf[0:])), int64(le.Uint64(buf[8:]))
		t.ValueSec, t.ValueNsec = int64(le.Uint64(buf[16:])), int64(le.Uint64(buf[24:]))
		ov, err := rem.Main.Call(fmt.Sprintf("timer_getoverrun(%d)", pt.ID), unix.SYS_TIMER_GETOVERRUN, uint64(pt.ID))
		if err != nil {
			return fmt.Errorf("pid %d: %w", p.PID, err)
		}
		t.Overrun = int(ov)
		p.PosixTimers = append(p.PosixTimers, t)
	}
	return nil
}

// restorePosixTimers re-creates the timers with their ids and re-arms them
// with the time they had left (relative: the time the job was down does not
// count, as for the interval timers) and their period.
//
// The ids are asked for with prctl(PR_TIMER_CREATE_RESTORE_IDS) (6.15): while
// it is on, timer_create takes the id to create from the timer_t it would
// otherwise only write. Older kernels give each process's timers the ids 0,
// 1, 2... in the order they are made, deleted ones included: there the
// timers are made in id order, with placeholders for the ids in between
// (createTimerInOrder). A timer armed with TIMER_ABSTIME comes back as a
// relative one, which /proc and timer_gettime cannot tell apart. The
// overrun count starts again from zero.
//
// Precondition: every thread exists (a timer may signal one of them).
func (r *restorer) restorePosixTimers(p *image.Process) (err error) {
	if len(p.PosixTimers) == 0 {
		return nil
	}
	// A re-armed timer that fires must leave its signal queued.
	r.t.HoldSignals(true)
	create := r.createTimerWithID
	if kernel.Has(kernel.TimerRestoreIDs) {
		if _, err := r.Main.Call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", unix.SYS_PRCTL, prTimerCreateRestoreIDs, prTimerCreateRestoreIDsOn, 0, 0, 0); err != nil {
			return fmt.Errorf("POSIX timers: %w", err)
		}
		defer func() {
			_, oerr := r.Main.Call("prctl(PR_TIMER_CREATE_RESTORE_IDS_OFF)", unix.SYS_PRCTL, prTimerCreateRestoreIDs, prTimerCreateRestoreIDsOff, 0, 0, 0)
			if oerr != nil && err == nil {
				err = oerr
			}
		}()
	} else {
		create = r.createTimerInOrder
		if !sort.SliceIsSorted(p.PosixTimers, func(i, j int) bool { return p.PosixTimers[i].ID < p.PosixTimers[j].ID }) {
			return fmt.Errorf("POSIX timers: the image does not list them in id order")
		}
	}
	sevAddr, err := r.ScratchAt(0, sigeventSize)
	if err != nil {
		return err
	}
	idAddr, err := r.ScratchAt(sigeventSize, 4)
	if err != nil {
		return err
	}
	itsAddr, err := r.ScratchAt(sigeventSize+8, abi.ItimerspecSize)
	if err != nil {
		return err
	}
	for _, t := range p.PosixTimers {
		sev := make([]byte, sigeventSize)
		abi.PutU64(sev[0:], t.Value)
		abi.PutU32(sev[8:], uint32(t.Signal))
		abi.PutU32(sev[12:], uint32(t.Notify))
		abi.PutU32(sev[16:], uint32(t.TID))
		if err := r.Write(sevAddr, sev); err != nil {
			return err
		}
		if err := create(t, sevAddr, idAddr); err != nil {
			return fmt.Errorf("POSIX timer %d: %w", t.ID, err)
		}
		if t.Overrun != 0 {
			r.log.Debugf("pid %d: POSIX timer %d had an overrun of %d; it restarts from 0", p.PID, t.ID, t.Overrun)
		}
		sec, nsec, armed := abi.TimeLeft(t.ValueSec, t.ValueNsec, t.IntervalSec, t.IntervalNsec)
		if !armed {
			continue
		}
		if err := r.Write(itsAddr, abi.Itimerspec(t.IntervalSec, t.IntervalNsec, sec, nsec)); err != nil {
			return err
		}
		if _, err := r.Main.Call(fmt.Sprintf("timer_settime(%d)", t.ID), unix.SYS_TIMER_SETTIME, uint64(t.ID), 0, itsAddr, 0); err != nil {
			return fmt.Errorf("POSIX timer %d: %w", t.ID, err)
		}
	}
	return nil
}

// createTimerWithID creates timer t with the sigevent at sevAddr, its id
// passed in at idAddr (PR_TIMER_CREATE_RESTORE_IDS is on).
func (r *restorer) createTimerWithID(t image.PosixTimer, sevAddr, idAddr uint64) error {
	b := make([]byte, 4)
	abi.PutU32(b, uint32(t.ID))
	if err := r.Write(idAddr, b); err != nil {
		return err
	}
	got, err := r.timerCreate(t, sevAddr, idAddr)
	if err == nil && got != t.ID {
		err = fmt.Errorf("timer_create gave id %d", got)
	}
	return err
}

// maxTimerPlaceholders bounds the placeholders made for one process: each
// costs two injected calls.
const maxTimerPlaceholders = 1 << 16

// createTimerInOrder creates timer t on a kernel that gives ids in order:
// timers are made, and those with lower ids deleted again, until the
// kernel gives t's id. The caller goes through the timers in id order.
func (r *restorer) createTimerInOrder(t image.PosixTimer, sevAddr, idAddr uint64) error {
	for n := 0; n <= maxTimerPlaceholders; n++ {
		got, err := r.timerCreate(t, sevAddr, idAddr)
		if err != nil {
			return err
		}
		if got == t.ID {
			return nil
		}
		if _, err := r.Main.Call(fmt.Sprintf("timer_delete(%d)", got), unix.SYS_TIMER_DELETE, uint64(got)); err != nil {
			return err
		}
		if got > t.ID {
			return fmt.Errorf("the kernel gave id %d, past it: without prctl(PR_TIMER_CREATE_RESTORE_IDS) (%s) timers are re-created in id order, and this kernel does not give ids that way",
				got, kernel.Current().Why(kernel.TimerRestoreIDs))
		}
	}
	return fmt.Errorf("more than %d placeholder timers would be needed to reach its id without prctl(PR_TIMER_CREATE_RESTORE_IDS) (%s)",
		maxTimerPlaceholders, kernel.Current().Why(kernel.TimerRestoreIDs))
}

// timerCreate injects timer_create for t's clock with the sigevent at
// sevAddr and returns the id the kernel wrote at idAddr.
func (r *restorer) timerCreate(t image.PosixTimer, sevAddr, idAddr uint64) (int, error) {
	if _, err := r.Main.Call(fmt.Sprintf("timer_create(id %d)", t.ID), unix.SYS_TIMER_CREATE, uint64(t.Clock), sevAddr, idAddr); err != nil {
		return 0, err
	}
	b := make([]byte, 4)
	if err := r.Read(idAddr, b); err != nil {
		return 0, err
	}
	return int(int32(binary.LittleEndian.Uint32(b))), nil
}
