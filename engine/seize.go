package engine

import (
	"errors"
	"fmt"
	"sort"
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
	t       *ptrace.Tracer
	pid     int   // host pid of the one process
	threads []int // host tids, the main thread first
	method  string
	frozen  time.Duration
	// waited are the threads whose stop has been collected.
	waited map[int]bool
}

// descendants lists every process below pid, depth first.
func descendants(pid int) ([]int, error) {
	kids, err := proc.Children(pid)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, k := range kids {
		out = append(out, k)
		sub, err := descendants(k)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

// stopJob brings every thread of the job below initPID into a ptrace-stop.
// With a freezer the set of tasks is caught atomically: freeze, seize and
// interrupt each thread, thaw (the interrupt takes effect as the thaw lets
// each thread move), wait for the stops. Without one, threads are seized in
// rounds until a round finds no new thread.
func stopJob(t *ptrace.Tracer, initPID int, fz Freezer, log logrus.FieldLogger) (*stoppedJob, error) {
	j := &stoppedJob{t: t, waited: map[int]bool{}}
	if fz != nil {
		j.method = "freezer"
		start := time.Now()
		if err := fz.Freeze(freezeTimeout); err != nil {
			return nil, fmt.Errorf("freeze job: %w", err)
		}
		err := j.seizeAll(initPID, true)
		if terr := fz.Thaw(); terr != nil && err == nil {
			err = fmt.Errorf("thaw job: %w", terr)
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
		return j, nil
	}
	j.method = "ptrace"
	log.Debug("no job cgroup: stopping the job with ptrace alone")
	for round := 0; ; round++ {
		if round == seizeRounds {
			j.release()
			return nil, fmt.Errorf("the job's threads did not settle after %d rounds of seizing", seizeRounds)
		}
		before := len(j.threads)
		if err := j.seizeAll(initPID, false); err != nil {
			j.release()
			return nil, err
		}
		if err := j.waitAll(); err != nil {
			j.release()
			return nil, err
		}
		if round > 0 && len(j.threads) == before {
			return j, nil
		}
	}
}

// seizeAll seizes and interrupts threads of the job not yet taken.
func (j *stoppedJob) seizeAll(initPID int, frozen bool) error {
	pids, err := descendants(initPID)
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return fmt.Errorf("the job has no process left to checkpoint")
	}
	if len(pids) > 1 {
		return fmt.Errorf("the job has %d processes (host pids %v): checkpointing more than one process is not supported yet", len(pids), pids)
	}
	j.pid = pids[0]
	tids, err := proc.Tasks(j.pid)
	if err != nil {
		return err
	}
	sort.Slice(tids, func(a, b int) bool { return tids[a] == j.pid || (tids[b] != j.pid && tids[a] < tids[b]) })
	for _, tid := range tids {
		if j.t.Seized(tid) {
			continue
		}
		err := j.t.Seize(tid, unix.PTRACE_O_TRACECLONE)
		if errors.Is(err, unix.EPERM) && !frozen {
			// Already ours: a thread cloned by a seized thread is
			// attached by the kernel (PTRACE_O_TRACECLONE).
			j.t.Adopt(tid)
		} else if errors.Is(err, unix.ESRCH) {
			continue // exited meanwhile
		} else if err != nil {
			return err
		}
		j.threads = append(j.threads, tid)
		if err := j.t.Interrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}

// waitAll waits until each taken thread reports its stop.
func (j *stoppedJob) waitAll() error {
	live := j.threads[:0]
	for _, tid := range j.threads {
		if j.waited[tid] {
			live = append(live, tid)
			continue
		}
		if _, err := j.t.WaitStop(tid, stopTimeout); err != nil {
			if !j.t.Seized(tid) {
				continue // exited
			}
			return fmt.Errorf("stop thread %d: %w", tid, err)
		}
		j.waited[tid] = true
		live = append(live, tid)
	}
	j.threads = live
	return nil
}

// kill ends the stopped job. SIGKILL reaches traced threads too, but a
// traced thread's exit is reported to the tracer first: until the tracer has
// collected it, the real parent (the sandbox init) cannot reap the process.
func (j *stoppedJob) kill() {
	unix.Kill(j.pid, unix.SIGKILL)
	// The leader's exit is reported only after every other thread's, so it
	// is collected last.
	for i := len(j.threads) - 1; i >= 0; i-- {
		tid := j.threads[i]
		if !j.t.Seized(tid) {
			continue
		}
		// WaitStop returns an error once the exit is collected.
		for i := 0; i < 3 && j.t.Seized(tid); i++ {
			j.t.WaitStop(tid, stopTimeout)
		}
	}
}

// release detaches every thread, letting the job run on.
func (j *stoppedJob) release() {
	for _, tid := range j.threads {
		if j.t.Seized(tid) {
			j.t.Detach(tid, 0)
		}
	}
}
