package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
)

// TestPrintStatus: each state of a job reads as the user needs it.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	base := supervisor.JobStatus{SupervisorPID: 10, JobPID: 11, Command: []string{"./app", "x"}, CkptDir: "/c",
		Started: now.Add(-90 * time.Minute), Generations: []int{3, 4}}
	for _, c := range []struct {
		name string
		edit func(js *supervisor.JobStatus)
		want []string
	}{
		{"periodic", func(js *supervisor.JobStatus) {
			js.Interval = supervisor.Duration(5 * time.Minute)
			js.NextCheckpoint = at(2 * time.Minute)
			js.Last = &supervisor.LastCheckpoint{Time: now.Add(-3 * time.Minute), Generation: 4, Bytes: 3 << 30, Duration: 2 * time.Second, Stopped: 300 * time.Millisecond}
		}, []string{"job:         ./app x", "pid:         11 (supervisor 10)", "running:     1h30m0s, launched", "generations: 3, 4",
			"last:        generation 4, 3m0s ago: 3.00 GiB in 2s (job stopped 300ms)", "next:        in 2m0s (every 5m0s)"}},
		{"restored, on request only", func(js *supervisor.JobStatus) { js.RestoredFrom = 4 }, []string{
			"restored from generation 4", "last:        no checkpoint taken since the job started", "next:        only on request"}},
		{"failing", func(js *supervisor.JobStatus) {
			js.Last = &supervisor.LastCheckpoint{Time: now.Add(-time.Minute), Error: "pid 2: fd 3: tcp socket", Failures: 3}
		}, []string{"last:        FAILED 1m0s ago (3 in a row): pid 2: fd 3: tcp socket"}},
		{"being taken", func(js *supervisor.JobStatus) { js.CheckpointingSince = at(-1500 * time.Millisecond) }, []string{"next:        being taken now, for 1.5s"}},
		{"no generation", func(js *supervisor.JobStatus) { js.Generations = nil }, []string{"generations: none"}},
	} {
		js := base
		c.edit(&js)
		var b bytes.Buffer
		printStatus(&b, &js, now)
		for _, w := range c.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, b.String())
			}
		}
	}
}
