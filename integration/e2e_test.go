package integration

import (
	"strconv"
	"syscall"
	"testing"
	"time"
)

// jobProgram is a test program as the end-to-end tests run it.
type jobProgram struct {
	name string
	// argv is the job's command line writing its progress to log.
	argv func(p *programs, log string) []string
	// check judges the finished log.
	check func(log []byte) error
	// runOn is how many log lines to let pass after a checkpoint or restart
	// before the next step, so each phase does real work.
	runOn int
	// heavy jobs use every core or a lot of memory: they run alone, and the
	// memory job only in some flavors.
	heavy      bool
	fewFlavors bool
	// finishTimeout bounds the run from the last restart to the end.
	finishTimeout time.Duration
}

// Sizes: each job runs about 8-15 s when left alone, far longer than the
// checkpoint/kill/restart phases of the test need, so it is still running
// when it is killed for the second time.
const (
	counterSteps = 400 // 20 ms each
	pythonSteps  = 400 // 20 ms each
	goSteps      = 800 // 10 ms each
	avxSeconds   = 10
	memMiB       = 1024
	memSteps     = 150
)

var jobPrograms = []jobProgram{
	{
		name:  "counter",
		argv:  func(p *programs, log string) []string { return []string{p.counter, log, strconv.Itoa(counterSteps)} },
		check: func(b []byte) error { return checkSequence(b, 1, counterSteps, parseCounterLine) },
		runOn: 20, finishTimeout: 60 * time.Second,
	},
	{
		name: "python",
		argv: func(p *programs, log string) []string {
			return []string{pythonPath, p.counterPy, log, strconv.Itoa(pythonSteps)}
		},
		check: func(b []byte) error { return checkSequence(b, 1, pythonSteps, parseSumLine) },
		runOn: 20, finishTimeout: 60 * time.Second,
	},
	{
		name:  "gotimers",
		argv:  func(p *programs, log string) []string { return []string{p.gotimers, log, strconv.Itoa(goSteps)} },
		check: func(b []byte) error { return checkSequence(b, 1, goSteps, parseGoLine) },
		runOn: 40, finishTimeout: 60 * time.Second,
	},
	{
		name:  "avx",
		argv:  func(p *programs, log string) []string { return []string{p.avx, log, strconv.Itoa(avxSeconds)} },
		check: func(b []byte) error { return checkAVXLog(b, avxSeconds) },
		runOn: 5, heavy: true, finishTimeout: 90 * time.Second,
	},
	{
		name: "mem",
		argv: func(p *programs, log string) []string {
			return []string{p.mem, log, strconv.Itoa(memMiB), strconv.Itoa(memSteps)}
		},
		check: func(b []byte) error { return checkSequence(b, 1, memSteps, parseMemLine) },
		runOn: 3, heavy: true, fewFlavors: true, finishTimeout: 120 * time.Second,
	},
}

// memFlavors are the flavors the 1 GiB job runs in, to keep the run short.
var memFlavors = map[string]bool{"root-v2": true, "user-v2": true, "user-v1": true}

// TestCheckpointRestart is the main story, for every program in every
// flavor: launch, checkpoint, run on, lose the job to SIGKILL, restart,
// checkpoint again (by SIGUSR1 this time), run on, lose it again, restart once
// more and let it finish. The job's own log must then hold every step exactly
// once: nothing lost, nothing replayed.
func TestCheckpointRestart(t *testing.T) {
	e := setup(t)
	for _, fl := range e.allFlavors() {
		t.Run(fl.name, func(t *testing.T) {
			if why := fl.usable(); why != "" {
				t.Skip(why)
			}
			for _, prog := range jobPrograms {
				if prog.fewFlavors && !memFlavors[fl.name] {
					continue
				}
				t.Run(prog.name, func(t *testing.T) {
					t.Parallel()
					if prog.heavy {
						machine.acquire(t, 2)
					} else {
						machine.acquire(t, 1)
					}
					checkpointRestart(t, e, fl, prog)
				})
			}
		})
	}
}

func checkpointRestart(t *testing.T, e *testEnv, fl flavor, prog jobProgram) {
	j := newJob(t, e, fl)
	const log = "job.log"
	s := j.launch(nil, prog.argv(e.progs, j.path(log))...)
	j.waitLines(s, log, prog.runOn)

	c1 := j.checkpoint()
	t.Logf("generation %d: %d bytes in %v, job stopped %v",
		c1.Generation, c1.Bytes, time.Duration(c1.DurationNs), time.Duration(c1.StoppedNs))
	j.waitLines(s, log, j.lines(log)+prog.runOn)
	s.kill()

	s = j.restart()
	j.waitLines(s, log, j.lines(log)+prog.runOn)
	s.signal(syscall.SIGUSR1)
	j.waitGeneration(s, c1.Generation+1)
	j.waitLines(s, log, j.lines(log)+prog.runOn)
	s.kill()
	j.checkList()

	// The timer keeps checkpointing the restored job; not the memory job,
	// whose every checkpoint writes 1 GiB.
	var opts []string
	if !prog.fewFlavors {
		opts = []string{"--interval", "2"}
	}
	s = j.restart(opts...)
	s.finish(0, prog.finishTimeout)
	if err := prog.check(j.readFile(log)); err != nil {
		t.Fatalf("job log after two restarts: %v", err)
	}
}
