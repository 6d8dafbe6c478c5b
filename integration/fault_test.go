package integration

import (
	"bytes"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Fault injection: $CKPT_FAULT_ROUNDS rounds (50 by default), seeded by
// $CKPT_FAULT_SEED.
const (
	faultRounds = 50
	faultSeed   = 20261204
	faultMiB    = 64 // long enough a checkpoint and restore to land in
)

// TestFaultInjection kills the supervisor with SIGKILL, as a batch system
// preempting the job would, at random points of a checkpoint and then of
// the restore that follows, round after round; each round ends with a
// restart left to run. The job checks its 64 MiB against a checksum at
// every step and logs each step: it must go on to the end with every step
// logged exactly once, and every generation left must verify.
func TestFaultInjection(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "root-v2", "user-none")
	rounds := envInt(t, "CKPT_FAULT_ROUNDS", faultRounds)
	seed := envInt(t, "CKPT_FAULT_SEED", faultSeed)
	t.Logf("fault injection: %d rounds, seed %d (CKPT_FAULT_SEED=%d CKPT_FAULT_ROUNDS=%d repeats this run)", rounds, seed, seed, rounds)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	s := j.launch(nil, e.progs.mem, j.path(log), strconv.Itoa(faultMiB), "1000000")
	j.waitLines(s, log, 3)

	// How long a checkpoint and a restore take here: the kills land
	// anywhere from their start to a little past their end.
	c := j.checkpoint()
	ckptSpan := time.Duration(c.DurationNs)*3/2 + 20*time.Millisecond
	s.kill()
	start := time.Now()
	s = j.restart()
	waitRestored(t, s)
	restoreSpan := time.Since(start)*3/2 + 20*time.Millisecond
	t.Logf("kills land within %v of a checkpoint's start and %v of a restart's", ckptSpan, restoreSpan)

	for round := 1; round <= rounds; round++ {
		j.waitLines(s, log, j.lines(log)+2)
		d := time.Duration(rng.Int64N(int64(ckptSpan)))
		s.signal(syscall.SIGUSR1) // a checkpoint, as on --signal
		time.Sleep(d)
		s.kill()

		r := time.Duration(rng.Int64N(int64(restoreSpan)))
		s = j.restart()
		time.Sleep(r)
		if s.exited() {
			t.Fatalf("round %d (checkpoint killed after %v): the restart ended on its own (%s):\n%s", round, d, s.status(), s.output())
		}
		s.kill()

		s = j.restart()
		if n := waitRestored(t, s); n < 1 {
			t.Fatalf("round %d: restored generation %d", round, n)
		}
		t.Logf("round %d: checkpoint killed after %v, restore after %v; latest generation %d", round, d, r, j.latest())
	}
	j.waitLines(s, log, j.lines(log)+3)
	s.kill()
	b := j.readFile(log)
	if err := checkSequence(b, 1, bytes.Count(b, []byte{'\n'}), parseMemLine); err != nil {
		t.Fatalf("job log after %d rounds: %v", rounds, err)
	}
	j.checkList()
}

// envInt reads a positive integer setting from the environment.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
