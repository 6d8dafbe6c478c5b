package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// run starts `ckpt-apptainer run` of argv with the extra options opts.
func (j *job) run(opts []string, argv ...string) *supervisor {
	j.t.Helper()
	args := append([]string{"--debug", "run", "--ckpt-dir", j.ckptDir}, j.cgroupArgs()...)
	args = append(append(append(args, opts...), "--"), argv...)
	return j.start("run", args)
}

// fakeScontrol puts an scontrol into the job's PATH that records its
// arguments in scontrol.log, and a Slurm job id into its environment.
// `scontrol show job` answers with the record in slurm-job (setSlurmJob),
// or with a running job.
func fakeScontrol(j *job, jobID string) {
	j.t.Helper()
	bin := j.path("slurm-bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		j.t.Fatal(err)
	}
	script := "#!/bin/sh\n" +
		"if [ \"$1\" = show ]; then cat " + j.path("slurm-job") + " 2>/dev/null || echo JobState=RUNNING Reason=None Restarts=0; exit 0; fi\n" +
		"echo \"$*\" >> " + j.path("scontrol.log") + "\n"
	if err := os.WriteFile(filepath.Join(bin, "scontrol"), []byte(script), 0o755); err != nil {
		j.t.Fatal(err)
	}
	if j.fl.user {
		for _, p := range []string{bin, filepath.Join(bin, "scontrol")} {
			if err := os.Chown(p, j.env.uid, j.env.gid); err != nil {
				j.t.Fatal(err)
			}
		}
	}
	j.extraEnv = append(j.extraEnv, "SLURM_JOB_ID="+jobID, "PATH="+bin+":"+os.Getenv("PATH"))
}

// setSlurmJob sets what the fake `scontrol show job` answers.
func (j *job) setSlurmJob(record string) {
	j.t.Helper()
	if err := os.WriteFile(j.path("slurm-job"), []byte(record+"\n"), 0o644); err != nil {
		j.t.Fatal(err)
	}
}

// scontrolCalls returns the recorded scontrol command lines.
func (j *job) scontrolCalls() []string {
	b, _ := os.ReadFile(j.path("scontrol.log"))
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", "_"))
}

// TestRunResumesAndRequeues is the batch script's life: `run` on an empty
// directory launches the job; Slurm's advance warning (--signal USR1) and
// then its SIGTERM each stop it with a final checkpoint and a requeue; a
// SIGTERM from scancel stops it without one; each next `run` resumes it; a
// run to the end records that the job finished, so the next `run` starts
// it anew and nothing asks for a requeue.
func TestRunResumesAndRequeues(t *testing.T) {
	e := setup(t)
	for _, name := range []string{"user-v2", "root-v2"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			t.Parallel()
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			fakeScontrol(j, "4242")
			const log = "job.log"
			opts := []string{"--signal", "B:USR1@60", "--requeue"}
			argv := []string{j.env.progs.counter, j.path(log), strconv.Itoa(counterSteps)}

			s := j.run(opts, argv...)
			j.waitLines(s, log, 20)
			if !s.outputContains("no checkpoint in") {
				t.Errorf("run on an empty directory did not say it launches:\n%s", s.output())
			}
			s.signal(syscall.SIGUSR1)
			s.finish(exitStopped, ckptTimeout)
			if got := j.scontrolCalls(); len(got) != 1 || got[0] != "requeue_4242" {
				t.Fatalf("after the USR1 stop scontrol was called as %q, want [requeue 4242]:\n%s", got, s.output())
			}
			first := j.latest()

			s = j.run(opts, argv...)
			j.waitLines(s, log, j.lines(log)+20)
			if !s.outputContains("from generation " + strconv.Itoa(first)) {
				t.Errorf("the second run did not resume generation %d:\n%s", first, s.output())
			}
			s.signal(syscall.SIGTERM)
			s.finish(exitStopped, ckptTimeout)
			if got := j.scontrolCalls(); len(got) != 2 {
				t.Fatalf("after the SIGTERM stop scontrol was called as %q, want two requeues:\n%s", got, s.output())
			}

			// scancel: Slurm is ending the job (COMPLETING, no time limit),
			// so a requeue would bring back a job its user cancelled.
			j.setSlurmJob("JobId=4242 JobState=COMPLETING Reason=None Restarts=0")
			s = j.run(opts, argv...)
			j.waitLines(s, log, j.lines(log)+10)
			s.signal(syscall.SIGTERM)
			s.finish(exitStopped, ckptTimeout)
			if got := j.scontrolCalls(); len(got) != 2 || !s.outputContains("was cancelled, so it is not requeued") {
				t.Fatalf("a cancelled job: scontrol calls %q, want still two, and a log that says why:\n%s", got, s.output())
			}
			j.setSlurmJob("JobId=4242 JobState=RUNNING Reason=None Restarts=0")

			s = j.run(opts, argv...)
			s.finish(0, 60*time.Second)
			if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
				t.Fatalf("job log across three stops and runs: %v", err)
			}
			if got := j.scontrolCalls(); len(got) != 2 {
				t.Errorf("a job that ran to its end asked for a requeue: scontrol calls %q", got)
			}

			// The job finished: the next run starts it anew, from 1.
			if err := os.Remove(j.path(log)); err != nil {
				t.Fatal(err)
			}
			s = j.run(opts, argv...)
			s.finish(0, 60*time.Second)
			if !s.outputContains("ran to its end") {
				t.Errorf("run after the job's end did not say it starts anew:\n%s", s.output())
			}
			if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
				t.Fatalf("job log of the new run: %v", err)
			}
		})
	}
}

// exitStopped is the supervisor's status when a signal or checkpoint --kill
// stopped the job after its final checkpoint.
const exitStopped = 143

// TestRunDamagedAndForeignCheckpoints: when every generation is damaged,
// `run` starts the command from the beginning and leaves them in place; a
// directory holding another command's checkpoint is refused and the
// checkpoint is left alone.
func TestRunDamagedAndForeignCheckpoints(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-none", "root-none")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	argv := []string{j.env.progs.counter, j.path(log), strconv.Itoa(counterSteps)}

	s := j.run(nil, argv...)
	j.waitLines(s, log, 20)
	gen := j.checkpoint().Generation
	s.kill()

	other := []string{j.env.progs.counter, j.path("other.log"), "5"}
	code, _, stderr := j.cli("run", "--ckpt-dir", j.ckptDir, "--no-cgroup", "--", other[0], other[1], other[2])
	if code == 0 || !strings.Contains(stderr, "of another command") {
		t.Errorf("run of another command on this directory: exit %d, want a refusal naming the other command:\n%s", code, stderr)
	}
	if _, err := os.Stat(j.path("other.log")); err == nil {
		t.Errorf("the refused command ran anyway")
	}

	flipByte(t, largestPageFile(t, j.genDir(gen)))
	if err := os.Remove(j.path(log)); err != nil {
		t.Fatal(err)
	}
	s = j.run(nil, argv...)
	s.finish(0, 60*time.Second)
	if !s.outputContains("from the beginning") || !s.outputContains("generation "+strconv.Itoa(gen)) {
		t.Errorf("run over a damaged checkpoint did not say it starts from the beginning and why:\n%s", s.output())
	}
	if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
		t.Fatalf("job log of the run started anew: %v", err)
	}
	if _, err := os.Stat(j.genDir(gen)); err != nil {
		t.Errorf("the damaged generation %d was not left in place: %v", gen, err)
	}
}
