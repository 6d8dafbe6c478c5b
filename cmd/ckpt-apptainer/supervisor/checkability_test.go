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

// TestNextCheckpoint: when status says the next checkpoint comes.
func TestNextCheckpoint(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name     string
		now      time.Duration // after t0
		first    time.Duration // after t0; 0: none pending
		interval time.Duration
		want     time.Duration // after t0; -1: none
	}{
		{"first tick", time.Minute, 0, 5 * time.Minute, 5 * time.Minute},
		{"a later tick", 11 * time.Minute, 0, 5 * time.Minute, 15 * time.Minute},
		{"early first checkpoint", 10 * time.Second, time.Minute, 5 * time.Minute, time.Minute},
		{"first checkpoint without an interval", 10 * time.Second, time.Minute, 0, time.Minute},
		{"only on request", time.Minute, 0, 0, -1},
	} {
		var first time.Time
		if c.first > 0 {
			first = t0.Add(c.first)
		}
		got := nextCheckpoint(t0.Add(c.now), t0, first, c.interval)
		switch {
		case c.want < 0 && got != nil:
			t.Errorf("%s: next checkpoint at %v, want none", c.name, got.Sub(t0))
		case c.want >= 0 && (got == nil || got.Sub(t0) != c.want):
			t.Errorf("%s: next checkpoint at %v, want %v after the start", c.name, got, c.want)
		}
	}
}

// TestGenList: the generations a history-branch message names.
func TestGenList(t *testing.T) {
	for _, c := range []struct {
		gens []int
		want string
	}{
		{[]int{3}, "3"},
		{[]int{3, 4}, "3 and 4"},
		{[]int{2, 3, 4}, "2, 3 and 4"},
	} {
		if got := genList(c.gens); got != c.want {
			t.Errorf("genList(%v) = %q, want %q", c.gens, got, c.want)
		}
	}
}
