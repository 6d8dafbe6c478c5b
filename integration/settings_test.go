package integration

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSettingsAndHistoryBranch: a job launched with an interval, a stop
// signal and a cgroup parent is restarted with none of them given, and
// goes on with all three (periodic checkpoints come, the signal stops it
// with a final one, the cgroup is the delegated one); the printed resume
// hint works as printed. Restarting an older generation makes the newer
// ones a history branch that `list` shows and that the next plain restart
// passes over, and the job's output goes on without a gap.
func TestSettingsAndHistoryBranch(t *testing.T) {
	e := setup(t)
	for _, name := range []string{"user-v2", "root-v1"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			t.Parallel()
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			const log = "job.log"
			const steps = 1000 // 20 ms each
			argv := []string{j.env.progs.counter, j.path(log), strconv.Itoa(steps)}

			s := j.launch([]string{"--interval", "2s", "--keep", "0", "--signal", "USR2"}, argv...)
			j.waitGeneration(s, 2)
			s.kill()

			// Nothing but the directory: the recorded settings apply.
			s = j.start("restart", []string{"--debug", "restart", "--ckpt-dir", j.ckptDir})
			from := j.latest()
			j.waitGeneration(s, from+1) // a periodic checkpoint nobody asked for
			for _, want := range []string{"recorded settings apply", "--interval 2s", "--signal USR2", "--cgroup-parent", "--keep 0"} {
				if !s.outputContains(want) && !(want == "--cgroup-parent" && fl.cgroup == "none") {
					t.Errorf("the restart's log does not name %q among the recorded settings:\n%s", want, s.output())
				}
			}
			s.signal(syscall.SIGUSR2)
			s.finish(exitStopped, ckptTimeout)
			hint := "resume it with: ckpt-apptainer restart --ckpt-dir " + j.ckptDir
			if !s.outputContains(hint) {
				t.Fatalf("the stop by the recorded --signal USR2 did not print %q:\n%s", hint, s.output())
			}
			newest := j.latest()

			// Back to generation 1: 2..newest become a branch.
			s = j.restart("1")
			j.waitLines(s, log, j.lines(log)+20)
			if !s.outputContains("history branch") {
				t.Errorf("the restart of generation 1 did not say the newer ones are a history branch:\n%s", s.output())
			}
			s.kill()
			for _, l := range j.list() {
				if onBranch := l.Generation > 1 && l.Generation <= newest; onBranch != (l.Branch != "") {
					t.Errorf("generation %d listed with branch %q (newest before the restart of 1: %d)", l.Generation, l.Branch, newest)
				}
			}

			// The hint, as printed: the job goes on from generation 1
			// (or a checkpoint after it), not from the branch.
			s = j.start("restart", append([]string{"--debug"}, strings.Fields(strings.TrimPrefix(hint, "resume it with: ckpt-apptainer "))...))
			s.finish(0, 60*time.Second)
			if s.outputContains("from generation 2 (") || s.outputContains("from generation "+strconv.Itoa(newest)+" (") {
				t.Errorf("the plain restart took a generation of the branch:\n%s", s.output())
			}
			if err := checkSequence(j.readFile(log), 1, steps, parseCounterLine); err != nil {
				t.Fatalf("job log across the restarts: %v", err)
			}
		})
	}
}
