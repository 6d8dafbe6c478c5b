package gpu

import (
	"errors"
	"fmt"
	"time"
)

// DefaultLockTimeout is how long Suspend lets a process's running GPU work
// finish before giving up the checkpoint.
const DefaultLockTimeout = 60 * time.Second

// Timing is how long the driver took with one process.
type Timing struct {
	PID                  int
	Lock, Checkpoint     time.Duration
	Restore, Unlock      time.Duration
	lockDone, checkpoint bool
}

// Suspension is a set of processes whose device state Suspend moved into
// host memory.
type Suspension struct {
	d Driver
	// pairs are the GPUs the processes go back onto; nil for the ones
	// they were checkpointed on.
	pairs   []Pair
	Timings []Timing
}

// Suspend locks every process of pids, then checkpoints every one. When a
// step fails, the processes already checkpointed are restored and every
// locked one unlocked again, so the job goes on on the GPU, and the error
// names the process and the step.
func Suspend(d Driver, pids []int, timeout time.Duration) (*Suspension, error) {
	s := &Suspension{d: d}
	for _, pid := range pids {
		t0 := time.Now()
		if err := d.Lock(pid, timeout); err != nil {
			return nil, s.undo(fmt.Errorf("GPU process %d: lock (waited up to %v for its GPU work): %w", pid, timeout, err))
		}
		s.Timings = append(s.Timings, Timing{PID: pid, Lock: time.Since(t0), lockDone: true})
	}
	for i := range s.Timings {
		tm := &s.Timings[i]
		t0 := time.Now()
		if err := d.Checkpoint(tm.PID); err != nil {
			return nil, s.undo(fmt.Errorf("GPU process %d: checkpoint of its device state: %w", tm.PID, err))
		}
		tm.Checkpoint, tm.checkpoint = time.Since(t0), true
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
// It goes through all of them whatever fails, and returns every failure.
func (s *Suspension) Resume() error {
	var errs []error
	for i := range s.Timings {
		tm := &s.Timings[i]
		if tm.checkpoint {
			t0 := time.Now()
			if err := s.d.Restore(tm.PID, s.pairs); err != nil {
				errs = append(errs, fmt.Errorf("GPU process %d: restore of its device state: %w", tm.PID, err))
				continue // a process still off the GPU cannot be unlocked
			}
			tm.Restore, tm.checkpoint = time.Since(t0), false
		}
		if tm.lockDone {
			t0 := time.Now()
			if err := s.d.Unlock(tm.PID); err != nil {
				errs = append(errs, fmt.Errorf("GPU process %d: unlock: %w", tm.PID, err))
				continue
			}
			tm.Unlock, tm.lockDone = time.Since(t0), false
		}
	}
	return errors.Join(errs...)
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
