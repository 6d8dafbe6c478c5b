package supervisor

import (
	"testing"
	"time"
)

// TestFirstCheckpointDelay: a launched job is checkpointed early only when
// that is sooner than its interval, or when it must be checkpointable.
func TestFirstCheckpointDelay(t *testing.T) {
	for _, c := range []struct {
		name     string
		launched bool
		interval time.Duration
		first    time.Duration
		require  bool
		want     time.Duration
	}{
		{"before a long interval", true, 10 * time.Minute, time.Minute, false, time.Minute},
		{"the interval is sooner", true, 30 * time.Second, time.Minute, false, 0},
		{"checkpoints only on request", true, 0, time.Minute, false, 0},
		{"required, no interval", true, 0, time.Minute, true, time.Minute},
		{"turned off", true, 10 * time.Minute, 0, true, 0},
		{"a restarted job was checkpointed", false, 10 * time.Minute, time.Minute, true, 0},
	} {
		s := &supervisor{launched: c.launched, interval: c.interval,
			opts: Options{FirstCheckpoint: c.first, RequireCheckpoint: c.require}}
		if got := s.firstCheckpointDelay(); got != c.want {
			t.Errorf("%s: first checkpoint after %v, want %v", c.name, got, c.want)
		}
	}
}

// TestFallbackText: a failed checkpoint's message names the generation
// the job resumes from, or says there is none.
func TestFallbackText(t *testing.T) {
	if got := fallbackText(0); got != "there is no checkpoint of this job: a stop now loses all its work" {
		t.Errorf("no generation: %q", got)
	}
	if got := fallbackText(7); got != "generation 7 is intact, and a restart resumes from it" {
		t.Errorf("generation 7: %q", got)
	}
}
