package integration

import (
	"os"
	"strings"
	"testing"
	"time"
)

// insideJob counts to 300 (into job.log, held open so that a restart cuts
// it back to its length at the checkpoint), asks for a checkpoint of itself with
// `ckpt-apptainer checkpoint` at 30 and with `kill -USR1 1` at 80.
const insideJob = `i=0
exec 3>> "$1/job.log"
while [ $i -lt 300 ]; do
	i=$((i+1))
	echo $i >&3
	if [ $i = 30 ]; then "$2" checkpoint > "$1/inside.out" 2>&1; echo "rc=$?" >> "$1/inside.out"; fi
	if [ $i = 80 ]; then kill -USR1 1; fi
	sleep 0.02
done`

// TestCheckpointFromInside: a job asks for its own checkpoints, with the
// same `ckpt-apptainer checkpoint` a user runs outside (which waits for
// the generation and prints it) and with SIGUSR1 to its PID 1; neither
// deadlocks the job, both give a generation, and after a kill and a
// restart the job's output goes on without a gap.
func TestCheckpointFromInside(t *testing.T) {
	e := setup(t)
	for _, name := range []string{"user-v2", "root-v1"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			t.Parallel()
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			s := j.launch(nil, "sh", "-c", insideJob, "sh", j.dir, e.bin)

			deadline := time.Now().Add(ckptTimeout)
			for !strings.Contains(string(readIfThere(j.path("inside.out"))), "rc=") {
				if s.exited() || time.Now().After(deadline) {
					t.Fatalf("the job's own checkpoint request never returned (%s):\n%s", s.status(), s.output())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if out := string(readIfThere(j.path("inside.out"))); !strings.Contains(out, "generation 1:") || !strings.Contains(out, "rc=0") {
				t.Fatalf("`ckpt-apptainer checkpoint` inside the job:\n%s\nsupervisor:\n%s", out, s.output())
			}
			j.waitGeneration(s, 2)
			if !s.outputContains("the job asked for a checkpoint (SIGUSR1 to its PID 1)") {
				t.Errorf("generation 2 was not taken for the job's SIGUSR1:\n%s", s.output())
			}
			s.kill()

			s = j.restart()
			s.finish(0, 60*time.Second)
			if err := checkSequence(j.readFile("job.log"), 1, 300, parseCounterLine); err != nil {
				t.Fatalf("job log across its own checkpoints, a kill and a restart: %v", err)
			}
		})
	}
}

// readIfThere reads path, or returns nil while it does not exist.
func readIfThere(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}
