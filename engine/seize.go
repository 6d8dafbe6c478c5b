package engine

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// Freezer freezes and thaws every task of the job at once (the job cgroup).
type Freezer interface {
	Freeze(timeout time.Duration) error
	Thaw() error
}

const (
	freezeTimeout = 10 * time.Second
	stopTimeout   = 10 * time.Second
	// seizeRounds bounds the ptrace-only fallback: a job that keeps
	// creating threads faster than they can be seized is refused.
	seizeRounds = 100
)

// stoppedJob is a job whose threads are all in a ptrace-stop.
type stoppedJob struct {
	t *ptrace.Tracer
	// procs are the job's processes, parents before children.
	procs  []*stoppedProc
	byPID  map[int]*stoppedProc
	method string
	frozen time.Duration
	// waited are the threads whose stop has been collected, interrupted
	// those asked to stop.
	waited, interrupted map[int]bool
	// list lists the processes to take.
	list func() ([]int, error)
}

// stoppedProc is one process of a stopped job.
type stoppedProc struct {
	pid     int   // host pid
	threads []int // host tids, the main thread first
	// zombie processes are not seized: they have exited and wait for
	// their parent.
	zombie bool
	// stopSig is the signal of the group stop the process was in before
	// the checkpoint (SIGSTOP...), 0 when it was running.
	stopSig unix.Signal
}

// descendants lists every process below pid, depth first.
func descendants(pid int) ([]int, error) {
	kids, err := proc.Children(pid)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, k := range kids {
		sub, err := descendants(k)
		if gone(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(append(out, k), sub...)
	}
	return out, nil
}

// gone tells whether err says a process listed a moment ago has exited and
// been reaped since. Before the job is frozen its short-lived children (a
// shell's `sleep`) come and go while the tree is walked; such a process
// has nothing left to checkpoint.
// (ENOENT, or ESRCH while it is being reaped).
func gone(err error) bool { return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) }

// AppScope limits a checkpoint to a container's application: the processes
// below Parent, the container runtime's process that started the
// application (and stays out of the image), which are in mount namespace
// MountNS (any, when empty), with all their descendants.
type AppScope struct {
	Parent  int
	MountNS string
}

// PIDs lists the host pids of the processes in the scope, parents before
// children.
func (s *AppScope) PIDs() ([]int, error) {
	kids, err := proc.Children(s.Parent)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, k := range kids {
		if s.MountNS != "" {
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", k))
			if err != nil || ns != s.MountNS {
				continue
			}
		}
		sub, err := descendants(k)
		if gone(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(append(out, k), sub...)
	}
	return out, nil
}

// JobPIDs lists the host pids of the processes a checkpoint takes: every
// one below init, or those in scope.
func JobPIDs(initPID int, scope *AppScope) ([]int, error) {
	if scope != nil {
		return scope.PIDs()
	}
	return descendants(initPID)
}

// stopJob brings every thread of the job below initPID (or in scope) into
// a ptrace-stop.
// With a freezer the set of tasks is caught atomically: freeze, seize and
// interrupt each thread, thaw (the interrupt takes effect as the thaw lets
// each thread move), wait for the stops. Without one, threads are seized in
// rounds until a round finds no new thread.
//
// A stop that catches a process between vfork and exec is undone and tried
// again (see vforkWait).
func stopJob(t *ptrace.Tracer, initPID int, scope *AppScope, fz Freezer, log logrus.FieldLogger) (*stoppedJob, error) {
	return retryVfork(t, func() (*stoppedJob, error) { return stopJobOnce(t, initPID, scope, fz, log) }, log)
}

// stopJobOnce is one try of stopJob.
func stopJobOnce(t *ptrace.Tracer, initPID int, scope *AppScope, fz Freezer, log logrus.FieldLogger) (*stoppedJob, error) {
	j := &stoppedJob{t: t, waited: map[int]bool{}, interrupted: map[int]bool{}, byPID: map[int]*stoppedProc{},
		list: func() ([]int, error) { return JobPIDs(initPID, scope) }}
	if fz != nil {
		j.method = "freezer"
		// A process in a group stop must be attached before the freeze:
		// attaching makes it move from stopped to traced, which a frozen
		// task (cgroup v1) never does, and the attach would wait forever.
		if err := j.seizeAll(seizeStopped); err != nil {
			j.release()
			return nil, err
		}
		start := time.Now()
		if err := fz.Freeze(freezeTimeout); err != nil {
			j.release()
			return nil, fmt.Errorf("freeze job: %w", err)
		}
		// One that stops between that pass and the freeze would hang the
		// attach: a watchdog thaws the job, which lets the attach finish,
		// and the checkpoint is given up.
		var hung atomic.Bool
		watchdog := time.AfterFunc(seizeHangTimeout, func() {
			hung.Store(true)
			fz.Thaw()
		})
		err := j.seizeAll(seizeFrozen)
		watchdog.Stop()
		if terr := fz.Thaw(); terr != nil && err == nil {
			err = fmt.Errorf("thaw job: %w", terr)
		}
		if hung.Load() && err == nil {
			err = fmt.Errorf("attaching to the frozen job took more than %v (a process stopped while the job was being frozen); checkpoint again", seizeHangTimeout)
		}
		j.frozen = time.Since(start)
		if err != nil {
			j.release()
			return nil, err
		}
		if err := j.waitAll(); err != nil {
			j.release()
			return nil, err
		}
		j.dropGone()
		return j, nil
	}
	j.method = "ptrace"
	log.Debug("no job cgroup: stopping the job with ptrace alone")
	for round := 0; ; round++ {
		if round == seizeRounds {
			j.release()
			return nil, fmt.Errorf("the job's threads did not settle after %d rounds of seizing", seizeRounds)
		}
		before := j.threadCount()
		if err := j.seizeAll(seizeRunning); err != nil {
			j.release()
			return nil, err
		}
		if err := j.waitAll(); err != nil {
			j.release()
			return nil, err
		}
		if round > 0 && j.threadCount() == before {
			j.dropGone()
			return j, nil
		}
	}
}

// seizeMode says how a pass of seizeAll takes the job's threads.
type seizeMode int

const (
	seizeStopped seizeMode = iota // attach to processes in a group stop, nothing else
	seizeFrozen                   // the job is frozen: attach and interrupt all
	seizeRunning                  // no freezer: attach and interrupt all, in rounds
)

// seizeHangTimeout bounds the attach to a frozen job.
const seizeHangTimeout = 5 * time.Second

// seizeAll seizes and interrupts threads of the job not yet taken.
func (j *stoppedJob) seizeAll(mode seizeMode) error {
	pids, err := j.list()
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return fmt.Errorf("the job has no process left to checkpoint")
	}
	for _, pid := range pids {
		sp := j.byPID[pid]
		if sp == nil {
			sp = &stoppedProc{pid: pid}
			j.byPID[pid] = sp
			j.procs = append(j.procs, sp)
		}
		if sp.zombie {
			continue
		}
		if mode == seizeStopped {
			if st, err := proc.ReadStat(pid); err != nil || st.State != 'T' {
				continue
			}
		}
		if err := j.seizeProc(sp, mode); err != nil {
			return fmt.Errorf("host pid %d: %w", pid, err)
		}
	}
	return nil
}

// seizeProc seizes and interrupts the threads of one process not yet taken.
func (j *stoppedJob) seizeProc(sp *stoppedProc, mode seizeMode) error {
	frozen := mode == seizeFrozen
	if st, err := proc.ReadStat(sp.pid); err == nil && st.State == 'Z' && len(sp.threads) == 0 {
		sp.zombie = true
		return nil
	}
	tids, err := proc.Tasks(sp.pid)
	if err != nil {
		return err
	}
	sort.Slice(tids, func(a, b int) bool { return tids[a] == sp.pid || (tids[b] != sp.pid && tids[a] < tids[b]) })
	for _, tid := range tids {
		if j.t.Seized(tid) {
			if err := j.interrupt(tid, mode); err != nil {
				return err
			}
			continue
		}
		err := j.t.Seize(tid, unix.PTRACE_O_TRACECLONE)
		if errors.Is(err, unix.EPERM) && !frozen && tracedByUs(tid) {
			// Already ours: a thread cloned by a seized thread is
			// attached by the kernel (PTRACE_O_TRACECLONE).
			j.t.Adopt(tid)
		} else if errors.Is(err, unix.EPERM) && tid == sp.pid && len(sp.threads) == 0 {
			// A zombie (its state read before it died), or a task
			// traced by someone else.
			if st, serr := proc.ReadStat(sp.pid); serr == nil && st.State == 'Z' {
				sp.zombie = true
				return nil
			}
			return fmt.Errorf("seize %d: %w (is it traced by another program, a debugger or strace?)", tid, err)
		} else if errors.Is(err, unix.ESRCH) {
			continue // exited meanwhile
		} else if err != nil {
			return err
		}
		sp.threads = append(sp.threads, tid)
		if err := j.interrupt(tid, mode); err != nil {
			return err
		}
	}
	return nil
}

// interrupt asks a seized thread to stop, once, except in the pass that
// only attaches.
func (j *stoppedJob) interrupt(tid int, mode seizeMode) error {
	if mode == seizeStopped || j.interrupted[tid] {
		return nil
	}
	if err := j.t.Interrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	j.interrupted[tid] = true
	return nil
}

// waitAll waits until each taken thread reports its stop, and notes which
// processes were in a group stop.
func (j *stoppedJob) waitAll() error {
	if vf := j.sharedVM(); vf != nil {
		return vf
	}
	for _, sp := range j.procs {
		live := sp.threads[:0]
		for _, tid := range sp.threads {
			if j.waited[tid] {
				live = append(live, tid)
				continue
			}
			st, err := j.t.WaitStop(tid, stopTimeout)
			if err != nil {
				if !j.t.Seized(tid) {
					continue // exited
				}
				return fmt.Errorf("stop thread %d: %w", tid, err)
			}
			// A group stop shows as PTRACE_EVENT_STOP with the stop
			// signal (WaitStatus.TrapCause only decodes SIGTRAP stops).
			if tid == sp.pid && uint32(st.Status)>>16 == unix.PTRACE_EVENT_STOP && isStopSignal(st.Signal()) {
				sp.stopSig = st.Signal()
			}
			j.waited[tid] = true
			live = append(live, tid)
		}
		sp.threads = live
	}
	return nil
}

// isStopSignal reports whether sig puts a process in a group stop.
func isStopSignal(sig unix.Signal) bool {
	switch sig {
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return true
	}
	return false
}

// dropGone forgets the processes that exited between being listed and
// being seized: no thread of theirs was taken, and they are not zombies
// (a process outside the frozen cgroup can still exit then).
func (j *stoppedJob) dropGone() {
	kept := j.procs[:0]
	for _, sp := range j.procs {
		if !sp.zombie && len(sp.threads) == 0 {
			delete(j.byPID, sp.pid)
			continue
		}
		kept = append(kept, sp)
	}
	j.procs = kept
}

// live returns the processes that were seized (every one but the zombies).
func (j *stoppedJob) live() []*stoppedProc {
	var out []*stoppedProc
	for _, sp := range j.procs {
		if !sp.zombie {
			out = append(out, sp)
		}
	}
	return out
}

// kill ends the stopped job. SIGKILL reaches traced threads too, but a
// traced thread's exit is reported to the tracer first: until the tracer has
// collected it, the real parent (the sandbox init) cannot reap the process.
func (j *stoppedJob) kill() {
	for _, sp := range j.live() {
		unix.Kill(sp.pid, unix.SIGKILL)
	}
	for _, sp := range j.live() {
		// The leader's exit is reported only after every other thread's,
		// so it is collected last.
		for i := len(sp.threads) - 1; i >= 0; i-- {
			tid := sp.threads[i]
			// WaitStop returns an error once the exit is collected.
			for n := 0; n < 3 && j.t.Seized(tid); n++ {
				j.t.WaitStop(tid, stopTimeout)
			}
		}
	}
}

// release detaches every thread, letting the job run on. A process that was
// in a group stop is put back into it.
//
// Only a thread in a ptrace-stop can be detached, and the stop of one not
// yet waited for may be a signal's, which must be passed on. Those are
// collected after the others are let go: a process that vforked waits for
// its child, which may be one of the stopped ones, before it can stop
// itself. One that still does not stop is left to the tracer's exit
// (ptrace.Run).
func (j *stoppedJob) release() {
	var pending []int
	for _, sp := range j.procs {
		for _, tid := range sp.threads {
			if !j.t.Seized(tid) {
				continue
			}
			if !j.waited[tid] {
				pending = append(pending, tid)
				continue
			}
			sig := 0
			if tid == sp.pid {
				sig = int(sp.stopSig)
			}
			j.t.Detach(tid, sig)
		}
	}
	detachWhenStopped(j.t, pending, releaseTimeout, func(tid int) int {
		if sp := j.byPID[tid]; sp != nil {
			return int(sp.stopSig)
		}
		return 0
	})
}

// releaseTimeout bounds the wait, on release, for threads that were asked
// to stop and had not yet. (A variable for the tests.)
var releaseTimeout = 5 * time.Second

func (j *stoppedJob) threadCount() int {
	n := 0
	for _, sp := range j.procs {
		n += len(sp.threads)
	}
	return n
}

// tracedByUs reports whether this process is tid's tracer.
func tracedByUs(tid int) bool {
	st, err := proc.ReadStatus(strconv.Itoa(tid))
	return err == nil && st["TracerPid"] == strconv.Itoa(os.Getpid())
}
