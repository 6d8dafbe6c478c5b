package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// clockScript logs a step counter and CLOCK_MONOTONIC every 50 ms.
const clockScript = `import sys, time
with open(sys.argv[1], "a") as f:
    for i in range(1, 1000000):
        f.write("%d %d\n" % (i, time.monotonic_ns()))
        f.flush()
        time.sleep(0.05)
`

// clockGap is how long the job stays dead between kill and restart. Without
// a time namespace its CLOCK_MONOTONIC would jump by at least this much.
const clockGap = 3 * time.Second

// TestMonotonicClockContinues checks that a restored job's CLOCK_MONOTONIC
// goes on from where it was at the checkpoint: it never runs backwards and
// does not jump by the time the job was dead.
func TestMonotonicClockContinues(t *testing.T) {
	e := setup(t)
	skipWithout(t, kernel.TimeNamespace)
	for _, name := range []string{"user-v2", "root-none"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			script := j.path("clock.py")
			if err := os.WriteFile(script, []byte(clockScript), 0o644); err != nil {
				t.Fatal(err)
			}
			s := j.launch(nil, "/usr/bin/python3", script, j.path("clock.log"))
			j.waitLines(s, "clock.log", 5)
			j.checkpoint()
			j.waitLines(s, "clock.log", j.lines("clock.log")+5)
			s.kill()
			time.Sleep(clockGap)

			s = j.restart()
			n := j.lines("clock.log")
			j.waitLines(s, "clock.log", n+10)
			s.kill()
			if err := checkClockLog(j.readFile("clock.log"), clockGap); err != nil {
				t.Fatalf("%v\n%s", err, j.readFile("clock.log"))
			}
		})
	}
}

// checkClockLog requires steps 1..N once each, in order, with monotonic
// times that never decrease and never advance by gap or more between two
// steps.
func checkClockLog(b []byte, gap time.Duration) error {
	var last int64
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			return fmt.Errorf("line %d: %q is not \"step ns\"", i+1, line)
		}
		step, err1 := strconv.Atoi(f[0])
		ns, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("line %d: %q is not \"step ns\"", i+1, line)
		}
		if step != i+1 {
			return fmt.Errorf("line %d holds step %d: a step was lost or repeated", i+1, step)
		}
		if i > 0 {
			d := time.Duration(ns - last)
			if d < 0 {
				return fmt.Errorf("step %d: CLOCK_MONOTONIC went back by %v", step, -d)
			}
			if d >= gap {
				return fmt.Errorf("step %d: CLOCK_MONOTONIC jumped by %v (the job was dead for %v)", step, d, gap)
			}
		}
		last = ns
	}
	return nil
}

func TestCheckClockLog(t *testing.T) {
	tests := []struct {
		name, log string
		ok        bool
	}{
		{"steady", "1 100\n2 200\n3 300\n", true},
		{"backwards", "1 100\n2 50\n", false},
		{"jump", "1 100\n2 4000000100\n", false},
		{"repeat", "1 100\n1 200\n", false},
		{"gap", "1 100\n3 200\n", false},
		{"garbage", "1 100\nx\n", false},
	}
	for _, tt := range tests {
		err := checkClockLog([]byte(tt.log), 3*time.Second)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// TestRestartNeedsTimeNamespace restarts a job that had a time namespace
// on a node without time namespaces (switched off): the restart is refused
// before anything starts, naming the feature and --no-timens, and the
// generation stays; with --no-timens the job resumes.
func TestRestartNeedsTimeNamespace(t *testing.T) {
	e := setup(t)
	skipWithout(t, kernel.TimeNamespace)
	fl := e.pickFlavor(t, "user-none", "root-none")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	s := counterJob(j)
	j.waitLines(s, "job.log", 20)
	c := j.checkpoint("--kill")
	s.finish(143, killTimeout)

	j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_DISABLE=time-namespace")
	s = j.restart()
	code := s.waitExit(cliTimeout)
	out := s.output()
	if code != 1 || !strings.Contains(out, "time-namespace") || !strings.Contains(out, "--no-timens") ||
		!strings.Contains(out, "restart not started") {
		t.Fatalf("restart on a node without time namespaces: exit %d, want 1 and an error naming time-namespace and --no-timens:\n%s", code, out)
	}
	if strings.Contains(out, "restored generation") {
		t.Fatalf("the refused restart restored something:\n%s", out)
	}
	if got := j.latest(); got != c.Generation {
		t.Fatalf("latest generation %d after the refused restart, want %d", got, c.Generation)
	}

	s = j.restart("--no-timens")
	s.finish(0, 90*time.Second)
	if err := checkSequence(j.readFile("job.log"), 1, counterSteps, parseCounterLine); err != nil {
		t.Fatalf("job log: %v", err)
	}
}

// skipWithout skips a test that needs kernel feature f when the test run
// switched it off (make test-rhel8).
func skipWithout(t *testing.T, f kernel.Feature) {
	t.Helper()
	off, err := kernel.ParseDisable(os.Getenv(kernel.EnvDisable))
	if err != nil {
		t.Fatal(err)
	}
	if off[f] {
		t.Skipf("%s is switched off by $%s", f, kernel.EnvDisable)
	}
}
