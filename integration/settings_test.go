package integration

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSettingsAndHistoryBranch: a job launched with an interval, a stop
// signal and --keep is restarted with none of them given, and goes on with
// them (periodic checkpoints come, the signal stops it with a final one);
// the printed resume hint works as printed. Restarting an older generation makes the newer
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
			for _, want := range []string{"recorded settings apply", "--interval 2s", "--signal USR2", "--keep 0"} {
				if !s.outputContains(want) {
					t.Errorf("the restart's log does not name %q among the recorded settings:\n%s", want, s.output())
				}
			}
			checkStatus(t, j, from)
			s.signal(syscall.SIGUSR2)
			s.finish(exitStopped, ckptTimeout)
			if code, out, errOut := j.cli("status", "--ckpt-dir", j.ckptDir); code == 0 || !strings.Contains(errOut, "no running job supervises") {
				t.Errorf("status with no job running: exit %d, %s%s", code, out, errOut)
			}
			hint := resumeHint(s.output())
			if !strings.HasPrefix(hint, "restart --ckpt-dir "+j.ckptDir) {
				t.Fatalf("the stop by the recorded --signal USR2 did not print a resume hint for %s:\n%s", j.ckptDir, s.output())
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
			s = j.start("restart", append([]string{"--debug"}, strings.Fields(hint)...))
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

// checkStatus checks what `status` says of a job restarted from
// generation from that has taken a periodic checkpoint since.
func checkStatus(t *testing.T, j *job, from int) {
	t.Helper()
	code, out, errOut := j.cli("status", "--ckpt-dir", j.ckptDir, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s%s", code, out, errOut)
	}
	var st struct {
		JobPID       int        `json:"job_pid"`
		RestoredFrom int        `json:"restored_from"`
		Interval     string     `json:"interval"`
		Next         *time.Time `json:"next_checkpoint"`
		Generations  []int      `json:"generations"`
		Last         *struct {
			Generation int    `json:"generation"`
			Error      string `json:"error"`
		} `json:"last_checkpoint"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(st.JobPID)); st.JobPID <= 0 || err != nil {
		t.Errorf("status names job pid %d, which does not run", st.JobPID)
	}
	if st.RestoredFrom != from || st.Interval != "2s" || st.Next == nil || !slices.Contains(st.Generations, from+1) ||
		st.Last == nil || st.Last.Generation <= from || st.Last.Error != "" {
		t.Errorf("status of a job restored from %d with a periodic checkpoint since:\n%s", from, out)
	}
}

// resumeHint returns the arguments of the command a stopped supervisor's
// log says resumes the job ("resume it with: ckpt-apptainer ARGS").
func resumeHint(log string) string {
	const mark = "resume it with: ckpt-apptainer "
	i := strings.LastIndex(log, mark)
	if i < 0 {
		return ""
	}
	rest := log[i+len(mark):]
	if j := strings.IndexAny(rest, "\"\n"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}
