package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The sbatch examples in examples/slurm, unchanged, on a real one-node
// Slurm cluster (scripts/setup-slurm.sh): submitted by the test user,
// preempted in the ways a ckpt partition does it, and checked to have
// resumed each time and to have finished with complete output.

// slurmApp is the job: it counts to its first argument, keeping the count
// and the running sum only in the shell's memory, and writes both to
// count.txt and a tick to standard output (Slurm's output file). A job
// that started over, lost a step or replayed one shows in either file.
const slurmApp = `#!/bin/sh
i=0
s=0
while [ $i -lt %d ]; do
	i=$((i + 1))
	s=$((s + i))
	echo "$i $s" >> count.txt
	echo "tick $i"
	sleep 0.2
done
echo done
`

var (
	slurmOnce   sync.Once
	slurmReason string
)

// requireSlurm makes sure the test cluster runs, starting it when it does
// not; it skips, or fails where CI asks for the full suite.
func requireSlurm(t *testing.T) {
	t.Helper()
	slurmOnce.Do(func() {
		script, err := filepath.Abs("../scripts/setup-slurm.sh")
		if err != nil {
			slurmReason = err.Error()
			return
		}
		if _, err := exec.LookPath("sbatch"); err != nil {
			slurmReason = "Slurm is not installed (scripts/install-deps.sh)"
			return
		}
		if exec.Command(script, "status").Run() == nil {
			return
		}
		if out, err := exec.Command(script, "start").CombinedOutput(); err != nil {
			slurmReason = fmt.Sprintf("%s start: %v\n%s", script, err, out)
		}
	})
	if slurmReason == "" {
		return
	}
	if os.Getenv("CKPT_REQUIRE_APPTAINER") != "" || os.Getenv("CKPT_REQUIRE_SLURM") != "" || os.Getenv("CI") != "" {
		t.Fatalf("the Slurm test cluster is required (CI): %s", slurmReason)
	}
	t.Skipf("no Slurm test cluster: %s", slurmReason)
}

// slurmJobDir is a submission directory owned by the test user, holding an
// example script, the app and, for containers, its image.
type slurmJobDir struct {
	t    *testing.T
	e    *testEnv
	dir  string
	name string // the job name the example sets
	jobs []string
}

func newSlurmJobDir(t *testing.T, e *testEnv, example, jobName string, steps int) *slurmJobDir {
	t.Helper()
	dir, err := os.MkdirTemp("", "ckpt-slurm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &slurmJobDir{t: t, e: e, dir: dir, name: jobName}
	if err := copyFile(filepath.Join("../examples/slurm", example), filepath.Join(dir, example), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app"), []byte(fmt.Sprintf(slurmApp, steps)), 0o755); err != nil {
		t.Fatal(err)
	}
	d.chown()
	t.Cleanup(func() {
		for _, id := range d.jobs {
			exec.Command("scancel", "--signal=KILL", id).Run()
		}
	})
	return d
}

func (d *slurmJobDir) path(name string) string { return filepath.Join(d.dir, name) }

func (d *slurmJobDir) chown() {
	d.t.Helper()
	err := filepath.Walk(d.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, d.e.uid, d.e.gid)
	})
	if err != nil {
		d.t.Fatal(err)
	}
}

// submit runs sbatch as the test user, with ckpt-apptainer in its PATH, as
// a user who loaded the module would.
func (d *slurmJobDir) submit(script string) string {
	d.t.Helper()
	path := filepath.Dir(d.e.bin) + ":/usr/local/bin:/usr/bin:/bin"
	cmd := exec.Command("runuser", "-u", d.e.user, "--", "env", "PATH="+path, "sbatch", "--parsable", script)
	cmd.Dir = d.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		d.t.Fatalf("sbatch %s: %v\n%s", script, err, out)
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), ";")
	if _, err := strconv.Atoi(id); err != nil {
		d.t.Fatalf("sbatch %s printed %q, not a job id", script, out)
	}
	d.jobs = append(d.jobs, id)
	return id
}

// output is the job's Slurm output file (--output=%x-%j.out).
func (d *slurmJobDir) output(id string) string {
	b, _ := os.ReadFile(d.path(d.name + "-" + id + ".out"))
	return string(b)
}

func (d *slurmJobDir) countLines() int {
	b, _ := os.ReadFile(d.path("count.txt"))
	return bytes.Count(b, []byte("\n"))
}

// waitFor polls cond until it holds, or fails the test naming what.
func (d *slurmJobDir) waitFor(what string, timeout time.Duration, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("after %v still waiting for %s\n%s", timeout, what, d.report())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitOutput waits until job id's output holds want n times.
func (d *slurmJobDir) waitOutput(id, want string, n int) {
	d.t.Helper()
	d.waitFor(fmt.Sprintf("%q %d times in job %s's output", want, n, id), 90*time.Second, func() bool {
		return strings.Count(d.output(id), want) >= n
	})
}

// waitSteps waits until the app has counted n steps.
func (d *slurmJobDir) waitSteps(n int) {
	d.t.Helper()
	d.waitFor(fmt.Sprintf("%d steps in count.txt", n), 90*time.Second, func() bool { return d.countLines() >= n })
}

// state is the job's JobState and ExitCode in `scontrol show job`.
func (d *slurmJobDir) state(id string) (state, exit string) {
	out, err := exec.Command("scontrol", "show", "job", "-o", id).Output()
	if err != nil {
		return "", ""
	}
	for _, f := range strings.Fields(string(out)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "JobState":
			state = v
		case "ExitCode":
			exit = v
		}
	}
	return state, exit
}

// waitEnded waits until job id is in a final state and returns it.
func (d *slurmJobDir) waitEnded(id string, timeout time.Duration) (state, exit string) {
	d.t.Helper()
	d.waitFor("job "+id+" to end", timeout, func() bool {
		state, exit = d.state(id)
		switch state {
		case "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED":
			return true
		}
		return false
	})
	return state, exit
}

// slurmCtl runs a Slurm command as root (the cluster's operator).
func (d *slurmJobDir) slurmCtl(args ...string) {
	d.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		d.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// report is what a failure shows: the job's files and Slurm's view of it.
func (d *slurmJobDir) report() string {
	var b strings.Builder
	for _, id := range d.jobs {
		st, exit := d.state(id)
		fmt.Fprintf(&b, "--- job %s (%s, exit %s) output:\n%s\n", id, st, exit, d.output(id))
	}
	count, _ := os.ReadFile(d.path("count.txt"))
	if len(count) > 400 {
		count = count[len(count)-400:]
	}
	fmt.Fprintf(&b, "--- count.txt (end):\n%s", count)
	return b.String()
}

var slurmTickLine = regexp.MustCompile(`^tick (\d+)$`)

// ticks collects the app's tick lines from the jobs' output files, in job
// order, one number per line.
func (d *slurmJobDir) ticks() []byte {
	var b bytes.Buffer
	for _, id := range d.jobs {
		for _, line := range strings.Split(d.output(id), "\n") {
			if m := slurmTickLine.FindStringSubmatch(line); m != nil {
				b.WriteString(m[1] + "\n")
			}
		}
	}
	return b.Bytes()
}

// checkComplete checks that the app counted every step exactly once, in
// memory that survived each stop, and printed every tick once.
func (d *slurmJobDir) checkComplete(steps int) {
	d.t.Helper()
	count, _ := os.ReadFile(d.path("count.txt"))
	if err := checkSequence(count, 1, steps, parseSumLine); err != nil {
		d.t.Errorf("count.txt: %v\n%s", err, d.report())
	}
	if err := checkSequence(d.ticks(), 1, steps, parseCounterLine); err != nil {
		d.t.Errorf("ticks in Slurm's output files: %v\n%s", err, d.report())
	}
}

// TestSlurmExamples submits examples/slurm/plain.sbatch and
// container.sbatch as they are. The plain job meets each way a ckpt
// partition ends a job: `scancel --signal=TERM --batch` (the supervisor
// asks for the requeue), `scontrol requeue` (Slurm requeues it), and a
// plain scancel (the job is not requeued, and submitting it again resumes
// it). The container job is stopped once. Each must resume from its
// checkpoint every time and finish with every step counted once.
//
// The jobs are shell loops that mostly sleep, and most of the test is
// Slurm's requeue delay, so it runs beside the other parallel tests
// without taking a machine slot.
func TestSlurmExamples(t *testing.T) {
	t.Parallel()
	e := setup(t)
	requireSlurm(t)

	t.Run("plain", func(t *testing.T) {
		t.Parallel()
		const steps = 150
		d := newSlurmJobDir(t, e, "plain.sbatch", "ckpt-plain", steps)
		id := d.submit("plain.sbatch")
		d.waitSteps(15)

		// The batch step alone gets SIGTERM, the job stays RUNNING: the
		// supervisor stops it and asks for the requeue.
		d.slurmCtl("scancel", "--signal=TERM", "--batch", id)
		d.waitOutput(id, "asking Slurm to requeue job "+id, 1)
		d.waitOutput(id, "restored generation", 1)
		d.waitSteps(d.countLines() + 10)

		// Slurm requeues the job itself and ends it.
		d.slurmCtl("scontrol", "requeue", id)
		d.waitOutput(id, "Slurm requeues job "+id+" itself", 1)
		d.waitOutput(id, "restored generation", 2)
		d.waitSteps(d.countLines() + 10)

		// The user cancels it: a final checkpoint, no requeue.
		d.slurmCtl("scancel", id)
		d.waitOutput(id, "is not requeued", 1)
		if st, _ := d.waitEnded(id, 60*time.Second); st != "CANCELLED" {
			t.Fatalf("cancelled job %s ended %s\n%s", id, st, d.report())
		}

		// Submitted again, it resumes and runs to its end.
		again := d.submit("plain.sbatch")
		if st, exit := d.waitEnded(again, 120*time.Second); st != "COMPLETED" || exit != "0:0" {
			t.Fatalf("resubmitted job %s ended %s, exit code %s\n%s", again, st, exit, d.report())
		}
		out := d.output(again)
		for _, want := range []string{"from generation", "job finished with exit status 0"} {
			if !strings.Contains(out, want) {
				t.Errorf("resubmitted job's output lacks %q\n%s", want, d.report())
			}
		}
		d.checkComplete(steps)
	})

	t.Run("container", func(t *testing.T) {
		t.Parallel()
		sif := busyboxImage(t)
		const steps = 100
		d := newSlurmJobDir(t, e, "container.sbatch", "ckpt-container", steps)
		if err := copyFile(sif, d.path("app.sif"), 0o644); err != nil {
			t.Fatal(err)
		}
		d.chown()
		id := d.submit("container.sbatch")
		d.waitSteps(15)
		d.slurmCtl("scancel", "--signal=TERM", "--batch", id)
		d.waitOutput(id, "asking Slurm to requeue job "+id, 1)
		d.waitOutput(id, "restored generation", 1)
		if st, exit := d.waitEnded(id, 120*time.Second); st != "COMPLETED" || exit != "0:0" {
			t.Fatalf("job %s ended %s, exit code %s\n%s", id, st, exit, d.report())
		}
		if out := d.output(id); !strings.Contains(out, "job finished with exit status 0") {
			t.Errorf("job output lacks the end\n%s", d.report())
		}
		d.checkComplete(steps)
	})
}
