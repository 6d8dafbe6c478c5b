package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The container stories: Apptainer jobs launched, checkpointed, killed and
// restarted as the plain jobs of e2e_test.go are, in every way Apptainer
// runs them (its own PID namespace or not, contained or not), and the
// container's own inputs (its image) changed or moved under a checkpoint.
// Each job writes its progress to a host directory bound into the
// container and exits with containerExit, which the last supervisor must
// report.

// containerExit is the exit status every container job ends with: not 0,
// so a supervisor that reports 0 for a job it lost is caught.
const containerExit = 3

// containerData is where the job's host directory is bound in the container.
const containerData = "/data"

// containerMode is one way of running `apptainer exec`.
type containerMode struct {
	name string
	opts []string
}

// containerModes: plain (the application is a child of Apptainer's starter
// in the job's PID namespace), --pid (Apptainer's own PID namespace with
// its init as PID 1) and --containall (--pid plus private /tmp, home, IPC
// and a clean environment).
var containerModes = []containerMode{
	{"plain", nil},
	{"pid", []string{"--pid"}},
	{"containall", []string{"--containall"}},
}

// containerFlavors are the flavors the container jobs run in: the
// unprivileged user, the normal case on clusters, and root with --userns.
var containerFlavors = []string{"user-v2", "root-v2"}

// containerProgram is a job run inside a container.
type containerProgram struct {
	name string
	// image returns the SIF the program runs in.
	image func(t *testing.T) string
	// script, when set, is written to the data directory as file
	// scriptName, for argv to run.
	script, scriptName string
	// argv is the command inside the container, with script the path of
	// the script and logPath that of the log; log is the log's name in the
	// data directory, steps how many lines the job writes in all.
	argv  func(script, logPath string, steps int) []string
	log   string
	steps int
	// check judges the finished log.
	check func(log []byte, steps int) error
	// runOn is how many log lines to let pass between the steps of the
	// test, so each phase does real work.
	runOn int
	// userOnly programs run in the unprivileged flavor only, to keep the
	// run short: they test the process tree, not the flavor.
	userOnly bool
}

// busyboxCounter is a shell loop: the counter lives in the shell's memory,
// each step is appended to the bound log (held open, so that a restart
// cuts back what the job wrote after the checkpoint) and printed on
// stdout.
const busyboxCounter = `exec 3>>"$2"
i=0
while [ $i -lt $1 ]; do
	i=$((i + 1))
	echo "tick $i" >&3
	echo "tick $i"
	sleep 0.05
done
exit 3`

// busyboxPipeline is a multi-process shell job: a producer and a consumer
// subshell joined by a pipe (lines may be in flight in it at a checkpoint),
// and a background child that must be alive at the end for the job to
// exit with 3.
const busyboxPipeline = `( while :; do sleep 0.2; done ) &
bg=$!
( i=0; while [ $i -lt $1 ]; do i=$((i + 1)); echo $i; sleep 0.05; done ) |
	( exec 3>>"$2"; s=0; while read n; do s=$((s + n)); echo "$n $s" >&3; echo "tick $n"; done; exit 3 )
st=$?
kill $bg || exit 9
exit $st`

// pyChain is a python3 job whose state is in memory only: a running hash
// over the steps and a list of every hash so far (heap objects that grow),
// written to a log opened once and kept open for appending.
const pyChain = `import sys, time
log, steps = sys.argv[1], int(sys.argv[2])
M = (1 << 64) - 1
h, hist = 0xcbf29ce484222325, []
f = open(log, "a", buffering=1)
for i in range(1, steps + 1):
    h = ((h ^ i) * 0x100000001b3) & M
    hist.append(h)
    f.write("%d %016x %016x\n" % (i, h, sum(hist) & M))
    print("tick %d" % i, flush=True)
    time.sleep(0.02)
f.close()
sys.exit(3)
`

// pyFork is a python3 job of two processes: a forked child computes the
// hash chain and sends each step through a pipe; the parent keeps a sum of
// the steps, writes both to its log (opened once, appending) and at the end
// reaps the child, which must have exited 0.
const pyFork = `import os, sys, time
log, steps = sys.argv[1], int(sys.argv[2])
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    M = (1 << 64) - 1
    h = 0xcbf29ce484222325
    for i in range(1, steps + 1):
        h = ((h ^ i) * 0x100000001b3) & M
        os.write(w, b"%d %016x\n" % (i, h))
        time.sleep(0.02)
    os._exit(0)
os.close(w)
f = open(log, "a", buffering=1)
s = 0
for line in os.fdopen(r):
    i, h = line.split()
    s += int(i)
    f.write("%s %s %d\n" % (i, h, s))
    print("tick %s" % i, flush=True)
_, status = os.waitpid(pid, 0)
sys.exit(3 if status == 0 else 8)
`

var containerPrograms = []containerProgram{
	{
		name: "busybox-counter", image: busyboxImage,
		argv: func(_, logPath string, steps int) []string {
			return []string{"sh", "-c", busyboxCounter, "counter", strconv.Itoa(steps), logPath}
		},
		log: "ticks.log", steps: 200, runOn: 20,
		check: func(b []byte, steps int) error { return checkSequence(b, 1, steps, parseTickLine) },
	},
	{
		name: "python-chain", image: pythonImage,
		script: pyChain, scriptName: "chain.py",
		argv: func(script, logPath string, steps int) []string {
			return []string{"python3", script, logPath, strconv.Itoa(steps)}
		},
		log: "chain.log", steps: 400, runOn: 25,
		check: func(b []byte, steps int) error { return checkSequence(b, 1, steps, parseChainLine) },
	},
	{
		name: "busybox-pipeline", image: busyboxImage, userOnly: true,
		argv: func(_, logPath string, steps int) []string {
			return []string{"sh", "-c", busyboxPipeline, "pipeline", strconv.Itoa(steps), logPath}
		},
		log: "pipe.log", steps: 200, runOn: 20,
		check: func(b []byte, steps int) error { return checkSequence(b, 1, steps, parseSumLine) },
	},
	{
		name: "python-fork", image: pythonImage, userOnly: true,
		script: pyFork, scriptName: "fork.py",
		argv: func(script, logPath string, steps int) []string {
			return []string{"python3", script, logPath, strconv.Itoa(steps)}
		},
		log: "fork.log", steps: 400, runOn: 25,
		check: func(b []byte, steps int) error { return checkSequence(b, 1, steps, parseForkLine) },
	},
}

// inContainer is the program's command line inside the container.
func (p containerProgram) inContainer() []string {
	return p.argv(containerData+"/"+p.scriptName, containerData+"/"+p.log, p.steps)
}

// containerFinishTimeout bounds the run from the last restart to the end.
const containerFinishTimeout = 90 * time.Second

// TestContainerCheckpointRestart is the main container story for every
// program, flavor and mode: launch, checkpoint, run on, lose the job to
// SIGKILL of its supervisor, restart, checkpoint --kill, restart again and
// let it finish. The job's log must hold every step once, its in-memory
// state must have carried on, and the last supervisor must exit with the
// job's status.
func TestContainerCheckpointRestart(t *testing.T) {
	e := setup(t)
	for _, flName := range containerFlavors {
		t.Run(flName, func(t *testing.T) {
			fl := e.flavorNamed(t, flName)
			for _, mode := range containerModes {
				for _, prog := range containerPrograms {
					if prog.userOnly && !fl.user {
						continue
					}
					t.Run(mode.name+"/"+prog.name, func(t *testing.T) {
						t.Parallel()
						sif := prog.image(t)
						machine.acquire(t, 1)
						containerCheckpointRestart(t, e, fl, mode, prog, sif)
					})
				}
			}
		})
	}
}

func containerCheckpointRestart(t *testing.T, e *testEnv, fl flavor, mode containerMode, prog containerProgram, sif string) {
	j := newJob(t, e, fl)
	log := j.setupData(prog)
	s := j.launch(nil, containerArgv(fl, mode, j.path("data"), sif, prog.inContainer()...)...)
	j.waitLines(s, log, prog.runOn)

	c1 := j.checkpoint()
	t.Logf("generation %d: %d bytes in %v, job stopped %v",
		c1.Generation, c1.Bytes, time.Duration(c1.DurationNs), time.Duration(c1.StoppedNs))
	j.waitLines(s, log, j.lines(log)+prog.runOn)
	s.kill()

	s = j.restart()
	j.waitLines(s, log, j.lines(log)+prog.runOn)
	j.checkpoint("--kill")
	s.finish(143, killTimeout)
	j.checkList()

	s = j.restart()
	j.waitLines(s, log, j.lines(log)+prog.runOn)
	s.finish(containerExit, containerFinishTimeout)
	if err := prog.check(j.readFile(log), prog.steps); err != nil {
		t.Fatalf("job log after two restarts: %v", err)
	}
	// What the application prints reaches the restarted supervisor's
	// stdout, not only the bound file.
	if last := fmt.Sprintf("tick %d\n", prog.steps); !s.outputContains(last) {
		t.Errorf("the last step %q is not on the restarted job's stdout:\n%s", last, s.output())
	}
}

// TestContainerImageChanged changes the image between a checkpoint and the
// restart: the restart must refuse, naming the image, and leave the
// checkpoint intact, so a restart with the original image put back resumes
// the job.
func TestContainerImageChanged(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := busyboxImage(t)
	fl := e.pickFlavor(t, "user-v2", "root-v2")
	machine.acquire(t, 1)
	prog := containerPrograms[0]
	j := newJob(t, e, fl)
	log := j.setupData(prog)
	img := j.privateImage(sif, "images/busybox.sif")
	s := j.launch(nil, containerArgv(fl, containerModes[0], j.path("data"), img, prog.inContainer()...)...)
	j.waitLines(s, log, prog.runOn)
	j.checkpoint()
	s.kill()

	putBack := j.changeImage(img)
	before := j.lines(log)
	j.refusedRestart("a changed image", img, log)
	j.checkList()

	putBack()
	s = j.restart()
	j.waitLines(s, log, before+prog.runOn)
	s.finish(containerExit, containerFinishTimeout)
	if err := prog.check(j.readFile(log), prog.steps); err != nil {
		t.Fatalf("job log after a refused and a good restart: %v", err)
	}
}

// refusedRestart starts a restart that must be refused because of the
// image (what, for the messages): it must fail, name the image img, end
// every process it started and leave the job's log as it was.
func (j *job) refusedRestart(what, img, log string) {
	j.t.Helper()
	before := j.lines(log)
	s := j.restart()
	if code := s.waitExit(ckptTimeout); code == 0 || code == containerExit {
		j.t.Fatalf("restart with %s exited with %d, want a refusal:\n%s", what, code, s.output())
	}
	j.waitJobGone(nil)
	if !s.outputContains(img) {
		j.t.Errorf("the refusal (%s) does not name the image %s:\n%s", what, img, s.output())
	}
	if got := j.lines(log); got != before {
		j.t.Errorf("the refused restart touched the job's log: it went from %d to %d lines", before, got)
	}
}

// TestContainerImageMoved moves the image after a checkpoint: restart must
// refuse without being told where it went, and resume the job with
// --image NEWPATH.
func TestContainerImageMoved(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := busyboxImage(t)
	fl := e.pickFlavor(t, "user-v2", "root-v2")
	machine.acquire(t, 1)
	prog := containerPrograms[0]
	j := newJob(t, e, fl)
	log := j.setupData(prog)
	img := j.privateImage(sif, "images/busybox.sif")
	s := j.launch(nil, containerArgv(fl, containerModes[2], j.path("data"), img, prog.inContainer()...)...)
	j.waitLines(s, log, prog.runOn)
	j.checkpoint("--kill")
	s.finish(143, killTimeout)

	moved := j.path("moved/busybox-v1.sif")
	if err := os.MkdirAll(filepath.Dir(moved), 0o755); err != nil {
		t.Fatal(err)
	}
	j.chown(filepath.Dir(moved))
	if err := os.Rename(img, moved); err != nil {
		t.Fatal(err)
	}
	before := j.lines(log)
	j.refusedRestart("the image gone", img, log)

	s = j.restart("--image", moved)
	j.waitLines(s, log, before+prog.runOn)
	s.finish(containerExit, containerFinishTimeout)
	if err := prog.check(j.readFile(log), prog.steps); err != nil {
		t.Fatalf("job log after a restart from the moved image: %v", err)
	}
}

// TestContainerInspect checks that inspect of a container checkpoint
// shows the image's path and digest, as text and as JSON.
func TestContainerInspect(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := pythonImage(t)
	fl := e.pickFlavor(t, "user-v2", "root-v2")
	machine.acquire(t, 1)
	prog := containerPrograms[1]
	j := newJob(t, e, fl)
	log := j.setupData(prog)
	img := j.privateImage(sif, "images/python3.sif")
	digest, err := fileDigest(img)
	if err != nil {
		t.Fatal(err)
	}
	s := j.launch(nil, containerArgv(fl, containerModes[1], j.path("data"), img, prog.inContainer()...)...)
	j.waitLines(s, log, prog.runOn)
	j.checkpoint()
	s.kill()

	code, out, errOut := j.cli("inspect", "--ckpt-dir", j.ckptDir)
	if code != 0 {
		t.Fatalf("inspect failed (exit %d):\n%s%s", code, out, errOut)
	}
	hexDigest := strings.TrimPrefix(digest, "sha256:")
	if !strings.Contains(out, img) || !strings.Contains(out, hexDigest) {
		t.Errorf("inspect does not show the image %s with digest %s:\n%s", img, digest, out)
	}

	code, out, errOut = j.cli("inspect", "--ckpt-dir", j.ckptDir, "--json")
	if code != 0 {
		t.Fatalf("inspect --json failed (exit %d):\n%s%s", code, out, errOut)
	}
	var doc any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("inspect --json printed %q: %v", out, err)
	}
	strs := jsonStrings(doc, nil)
	if !slices.Contains(strs, img) {
		t.Errorf("inspect --json has no string %q (the image path):\n%s", img, out)
	}
	if !slices.Contains(strs, digest) {
		t.Errorf("inspect --json has no string %q (the image digest):\n%s", digest, out)
	}
}

// flavorNamed returns the flavor called name, skipping the test when it
// cannot run here.
func (e *testEnv) flavorNamed(t *testing.T, name string) flavor {
	t.Helper()
	for _, f := range e.allFlavors() {
		if f.name == name {
			if why := f.usable(); why != "" {
				t.Skip(why)
			}
			return f
		}
	}
	t.Fatalf("no flavor %q", name)
	return flavor{}
}

// setupData makes the job's data directory (bound at /data), writes
// the program's script into it and returns the log's name relative to the
// job's directory, as waitLines and readFile take it.
func (j *job) setupData(prog containerProgram) string {
	j.t.Helper()
	dir := j.path("data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		j.t.Fatal(err)
	}
	j.chown(dir)
	if prog.script != "" {
		p := filepath.Join(dir, prog.scriptName)
		if err := os.WriteFile(p, []byte(prog.script), 0o644); err != nil {
			j.t.Fatal(err)
		}
		j.chown(p)
	}
	return filepath.Join("data", prog.log)
}

// containerArgv is the apptainer command line for the flavor and mode, with
// the host directory data bound at /data.
func containerArgv(fl flavor, mode containerMode, data, sif string, cmd ...string) []string {
	base := apptainerArgv(fl, sif, cmd...)
	// apptainerArgv ends with SIF CMD...: options go before the image.
	at := len(base) - len(cmd) - 1
	opts := append(slices.Clone(mode.opts), "--bind", data+":"+containerData)
	return slices.Concat(base[:at], opts, base[at:])
}

// jsonStrings collects every string value in a decoded JSON document.
func jsonStrings(v any, acc []string) []string {
	switch x := v.(type) {
	case string:
		acc = append(acc, x)
	case []any:
		for _, e := range x {
			acc = jsonStrings(e, acc)
		}
	case map[string]any:
		for _, e := range x {
			acc = jsonStrings(e, acc)
		}
	}
	return acc
}

// parseTickLine parses "tick N".
func parseTickLine(line string) (int, error) {
	n, ok := strings.CutPrefix(line, "tick ")
	if !ok {
		return 0, fmt.Errorf("want \"tick N\"")
	}
	return strconv.Atoi(n)
}

// chain returns step i's value of the hash chain the python jobs compute
// (64-bit FNV-1a over the step numbers) and the sum of every value up to
// it, modulo 2^64.
func chain(i int) (h, sum uint64) {
	h = 0xcbf29ce484222325
	for k := 1; k <= i; k++ {
		h = (h ^ uint64(k)) * 0x100000001b3
		sum += h
	}
	return h, sum
}

// parseChainLine parses a line of pyChain: "I H T" with H and T in hex, the
// chain's value and running sum at step I.
func parseChainLine(line string) (int, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return 0, fmt.Errorf("want \"I H T\"")
	}
	i, err := strconv.Atoi(f[0])
	if err != nil || i < 1 {
		return 0, fmt.Errorf("step %q", f[0])
	}
	wantH, wantT := chain(i)
	if got := fmt.Sprintf("%016x %016x", wantH, wantT); f[1]+" "+f[2] != got {
		return 0, fmt.Errorf("state %s %s, want %s: the job's memory did not carry on", f[1], f[2], got)
	}
	return i, nil
}

// parseForkLine parses a line of pyFork: "I H S", H the child's chain value
// in hex and S the parent's sum 1+...+I.
func parseForkLine(line string) (int, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return 0, fmt.Errorf("want \"I H S\"")
	}
	i, err := strconv.Atoi(f[0])
	if err != nil || i < 1 {
		return 0, fmt.Errorf("step %q", f[0])
	}
	wantH, _ := chain(i)
	if want := fmt.Sprintf("%016x", wantH); f[1] != want {
		return 0, fmt.Errorf("child's hash %s, want %s: the child's memory did not carry on", f[1], want)
	}
	if s, err := strconv.Atoi(f[2]); err != nil || s != i*(i+1)/2 {
		return 0, fmt.Errorf("parent's sum %s, want %d: the parent's memory did not carry on", f[2], i*(i+1)/2)
	}
	return i, nil
}

// TestContainerProgramsOnHost runs each container program outside any
// container, with the host's busybox and python3, and checks that its log
// passes its checker, while the ways a bad restore shows (a lost step, a
// replayed step, a job started over, state that did not carry on) fail it.
// It needs neither root nor Apptainer: it keeps the programs and the
// checkers honest where the container tests cannot run.
func TestContainerProgramsOnHost(t *testing.T) {
	const steps = 30
	for _, prog := range containerPrograms {
		t.Run(prog.name, func(t *testing.T) {
			t.Parallel()
			interp := "busybox"
			if prog.script != "" {
				interp = pythonPath
			}
			if _, err := exec.LookPath(interp); err != nil {
				t.Skipf("%s not installed", interp)
			}
			dir := t.TempDir()
			script := filepath.Join(dir, prog.scriptName)
			if prog.script != "" {
				if err := os.WriteFile(script, []byte(prog.script), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			logPath := filepath.Join(dir, prog.log)
			argv := prog.argv(script, logPath, steps)
			if argv[0] == "python3" {
				argv[0] = pythonPath
			} else {
				argv = append([]string{"busybox"}, argv...)
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			out, err := cmd.Output()
			if code := cmd.ProcessState.ExitCode(); code != containerExit {
				t.Fatalf("%s exited with %d (%v), want %d", prog.name, code, err, containerExit)
			}
			if want := fmt.Sprintf("tick %d\n", steps); !strings.HasSuffix(string(out), want) {
				t.Errorf("stdout ends with %q, want %q", lastLine(out), want)
			}
			good, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := prog.check(good, steps); err != nil {
				t.Fatalf("the log of an undisturbed run fails its check: %v", err)
			}
			lines := strings.SplitAfter(string(good), "\n")
			lines = lines[:len(lines)-1] // after the last newline
			bad := map[string][]string{
				"lost step":     slices.Concat(lines[:10], lines[11:]),
				"replayed step": slices.Concat(lines[:11], lines[10:]),
				"started over":  slices.Concat(lines[:12], lines[:3], lines[12:]),
				"truncated":     lines[:steps-1],
			}
			if f := strings.Fields(lines[10]); len(f) > 1 && f[0] != "tick" {
				// Line 11 with the last digit of its state changed.
				n := len(f) - 1
				digit := "0"
				if strings.HasSuffix(f[n], "0") {
					digit = "1"
				}
				f[n] = f[n][:len(f[n])-1] + digit
				bad["state lost"] = slices.Concat(lines[:10], []string{strings.Join(f, " ") + "\n"}, lines[11:])
			}
			for name, ls := range bad {
				if err := prog.check([]byte(strings.Join(ls, "")), steps); err == nil {
					t.Errorf("a log with a %s passes the check", name)
				}
			}
		})
	}
}
