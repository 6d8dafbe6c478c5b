package gpu

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// DefaultLockTimeout is how long Suspend lets a process's running GPU work
// finish before giving up the checkpoint.
const DefaultLockTimeout = 60 * time.Second

// Timing is how long the driver took with one process.
type Timing struct {
	PID              int
	Lock, Checkpoint time.Duration
	Restore, Unlock  time.Duration
	// Moved is how much the process's resident memory grew across the
	// driver's checkpoint: about the device memory it held, which is now
	// in its host memory.
	Moved                int64
	rssBefore            int64
	lockDone, checkpoint bool
}

// Suspension is a set of processes whose device state Suspend moved into
// host memory.
type Suspension struct {
	d Driver
	// Skipped are the processes left out, with why.
	Skipped []Skip
	// pairs are the GPUs the processes go back onto; nil for the ones
	// they were checkpointed on.
	pairs   []Pair
	Timings []Timing
}

// Skip is a process Suspend left out.
type Skip struct {
	PID int
	Why string
}

// Suspend locks every process of pids the driver knows as a CUDA process,
// then checkpoints every one. A process with a device open that the driver
// does not know (a child that inherited the descriptors of a CUDA parent
// without using CUDA) is left out and listed in Skipped; the dump then
// meets its descriptors and says so. When a step fails, the processes
// already checkpointed are restored and every locked one unlocked again,
// so the job goes on on the GPU, and the error names the process and the
// step.
func Suspend(d Driver, pids []int, timeout time.Duration) (*Suspension, error) {
	s := &Suspension{d: d}
	for _, pid := range pids {
		if st, err := d.State(pid); err != nil || st != Running {
			if err == nil {
				err = fmt.Errorf("it is %v", st)
			}
			s.Skipped = append(s.Skipped, Skip{PID: pid, Why: err.Error()})
			continue
		}
		t0 := time.Now()
		if err := d.Lock(pid, timeout); err != nil {
			return nil, s.undo(fmt.Errorf("GPU process %d: lock (waited up to %v for its GPU work): %w", pid, timeout, err))
		}
		s.Timings = append(s.Timings, Timing{PID: pid, Lock: time.Since(t0), lockDone: true, rssBefore: rss(pid)})
	}
	for i := range s.Timings {
		tm := &s.Timings[i]
		t0 := time.Now()
		if err := d.Checkpoint(tm.PID); err != nil {
			return nil, s.undo(fmt.Errorf("GPU process %d: checkpoint of its device state: %w", tm.PID, err))
		}
		tm.Checkpoint, tm.checkpoint = time.Since(t0), true
		tm.Moved = max(0, rss(tm.PID)-tm.rssBefore)
	}
	return s, nil
}

// undo puts back what a failed Suspend did and returns err with whatever
// could not be put back.
func (s *Suspension) undo(err error) error {
	if rerr := s.Resume(); rerr != nil {
		return fmt.Errorf("%w; putting the job back on the GPU failed too: %v", err, rerr)
	}
	return err
}

// Resume restores every checkpointed process and unlocks every locked one.
// A process that has exited since, which the driver then fails for, is
// passed over. It goes through all of them whatever fails, and returns
// every failure.
func (s *Suspension) Resume() error {
	var errs []error
	for i := range s.Timings {
		tm := &s.Timings[i]
		if tm.checkpoint {
			t0 := time.Now()
			if err := s.d.Restore(tm.PID, s.pairs); err != nil && gone(tm.PID) {
				tm.checkpoint, tm.lockDone = false, false
				continue
			} else if err != nil {
				errs = append(errs, fmt.Errorf("GPU process %d: restore of its device state: %w", tm.PID, err))
				continue // a process still off the GPU cannot be unlocked
			}
			tm.Restore, tm.checkpoint = time.Since(t0), false
		}
		if tm.lockDone {
			t0 := time.Now()
			if err := s.d.Unlock(tm.PID); err != nil && gone(tm.PID) {
				tm.lockDone = false
				continue
			} else if err != nil {
				errs = append(errs, fmt.Errorf("GPU process %d: unlock: %w", tm.PID, err))
				continue
			}
			tm.Unlock, tm.lockDone = time.Since(t0), false
		}
	}
	return errors.Join(errs...)
}

// rss is the resident memory of pid; 0 when it cannot be read.
func rss(pid int) int64 {
	st, err := proc.ReadStatus(strconv.Itoa(pid))
	if err != nil {
		return 0
	}
	return st.Bytes("VmRSS")
}

// gone reports whether process pid has exited (and been reaped).
func gone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return errors.Is(err, os.ErrNotExist)
}

// Restored is a Suspension of processes the engine restored: the driver
// knows them as checkpointed, under their new pids. pairs (from Remap)
// move them onto other GPUs when any differs.
func Restored(d Driver, pids []int, pairs []Pair) *Suspension {
	s := &Suspension{d: d}
	if Moved(pairs) {
		s.pairs = pairs
	}
	for _, pid := range pids {
		s.Timings = append(s.Timings, Timing{PID: pid, lockDone: true, checkpoint: true})
	}
	return s
}
