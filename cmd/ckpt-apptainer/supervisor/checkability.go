package supervisor

import (
	"fmt"
	"time"
)

// A job that cannot be checkpointed (a TCP connection to a server outside
// the job, a device the engine does not handle) would otherwise run for
// its whole allocation with an error at every interval, and lose all its
// work at the preemption it was launched to survive. So the first
// checkpoint of a launched job comes soon after launch, its failure is
// reported once and loudly, and --require-checkpoint ends such a job at
// once with a status of its own.

// ExitNotCheckpointable is the supervisor's exit status when
// --require-checkpoint ended a job whose first checkpoint failed.
const ExitNotCheckpointable = 79

// DefaultFirstCheckpoint is how long after launch the first checkpoint is
// taken, unless the interval is shorter.
const DefaultFirstCheckpoint = time.Minute

// firstCheckpointDelay is when, after launch, the first checkpoint is
// taken; 0 leaves it to the interval (or to requests).
func (s *supervisor) firstCheckpointDelay() time.Duration {
	d := s.opts.FirstCheckpoint
	switch {
	case !s.launched || d <= 0:
		return 0
	case s.interval == 0 && !s.opts.RequireCheckpoint:
		// Checkpoints only on request: the user decides when.
		return 0
	case s.interval > 0 && d >= s.interval:
		return 0
	}
	return d
}

// checkpointed records that generation gen of the job is on disk (taken,
// or restored from).
func (s *supervisor) checkpointed(gen int, res *CheckpointResult) {
	s.state.mu.Lock()
	defer s.state.mu.Unlock()
	s.state.lastGen = gen
	if res != nil {
		s.state.last = &LastCheckpoint{Time: time.Now(), Generation: gen, Bytes: res.Bytes, Duration: res.Duration, Stopped: res.Stopped}
	}
}

// fallbackText says what a failed checkpoint leaves the job to resume
// from, naming the generation.
func fallbackText(lastGen int) string {
	if lastGen == 0 {
		return "there is no checkpoint of this job: a stop now loses all its work"
	}
	return fmt.Sprintf("generation %d is intact, and a restart resumes from it", lastGen)
}

// checkpointFailed reports a failed checkpoint: the first failure of a
// kind at Error level with what it means for the job, a repeat of the
// same failure briefly. With --require-checkpoint, a job that has no
// checkpoint at all is ended (final says the failed checkpoint was to end
// the job anyway).
func (s *supervisor) checkpointFailed(err error, final bool) {
	s.recordFailure(err)
	s.state.mu.Lock()
	prev, lastGen := s.state.last, s.state.lastGen
	repeat := prev != nil && prev.Error == err.Error()
	failures := 1
	if prev != nil && prev.Error != "" {
		failures = prev.Failures + 1
	}
	s.state.last = &LastCheckpoint{Time: time.Now(), Error: err.Error(), Failures: failures}
	s.state.mu.Unlock()
	s.mu.Lock()
	end := s.opts.RequireCheckpoint && lastGen == 0 && !final && !s.stopped
	if end {
		s.stopped, s.notCheckpointable = true, true
	}
	s.mu.Unlock()

	switch {
	case final:
		// The caller says what comes of it: the job is stopped anyway
		// (a stop signal), or runs on (`checkpoint --kill`).
		s.log.Errorf("checkpoint failed: %v", err)
	case repeat:
		s.log.Warnf("checkpoint failed again (%d in a row, for the same reason: %v); the job keeps running; %s", failures, err, fallbackText(lastGen))
	case lastGen == 0 && !final:
		s.log.Errorf("checkpoint failed: %v", err)
		s.log.Errorf("THIS JOB CANNOT BE CHECKPOINTED as it runs now, for the reason above: until a checkpoint succeeds, a preemption or the time limit loses all its work. Take what the error names out of the job, or launch it with --require-checkpoint to have such a job ended at once (exit status %d) instead of using its allocation",
			ExitNotCheckpointable)
	default:
		s.log.Errorf("checkpoint failed: %v (the job keeps running; %s)", err, fallbackText(lastGen))
	}
	if end {
		s.log.Errorf("--require-checkpoint: ending the job, whose first checkpoint failed")
		s.sb.Kill()
	}
}
