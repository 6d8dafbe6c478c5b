package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

// A process of the job asks for a checkpoint of the job it is part of
// without a connection to the supervisor: a connected socket to a process
// outside the job is what a checkpoint cannot take along, so the request
// would fail itself. It sends SIGUSR1 to the job's PID 1, the sandbox init,
// which passes it to the supervisor; `ckpt-apptainer checkpoint` run inside
// the job does that and then watches the checkpoint directory for the new
// generation, or for the record of a failure (image.CheckpointFailedName). It is frozen and checkpointed
// with the job meanwhile, so after a restart from that generation it
// reports the generation too, as DMTCP's checkpoint call returns twice.

// InsideJob says whether the caller is a process of a supervised job.
func InsideJob() bool {
	b, err := os.ReadFile("/proc/1/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) > 1 && args[1] == namespaces.InitArg
}

// recordFailure writes the record of a checkpoint that failed, which a
// request from inside the job waits for.
func (s *supervisor) recordFailure(err error) {
	if rerr := s.store.RecordCheckpointFailure(image.CheckpointFailure{Time: time.Now(), Error: err.Error()}); rerr != nil {
		s.log.Debug(rerr)
	}
}

// requestPoll is how often a request from inside the job looks for its
// outcome.
const requestPoll = 100 * time.Millisecond

// RequestFromInside asks for a checkpoint of the job the caller is part of
// and waits up to timeout for its outcome in dir. There are no progress
// figures: the caller is frozen while most of them would come.
func RequestFromInside(dir string, kill bool, timeout time.Duration, _ func(op string, done, total int64)) (*CheckpointResult, error) {
	if kill {
		return nil, errors.New("checkpoint --kill from inside the job: a job cannot have itself stopped this way; take the checkpoint, then end the job (or send the supervisor SIGTERM from outside)")
	}
	st := image.Peek(dir)
	gens, err := st.Generations()
	if err != nil {
		return nil, fmt.Errorf("checkpoint directory %s: %w", dir, err)
	}
	before := 0
	if len(gens) > 0 {
		before = gens[len(gens)-1]
	}
	asked := time.Now()
	if err := unix.Kill(1, unix.SIGUSR1); err != nil {
		return nil, fmt.Errorf("ask the job's init (PID 1) for a checkpoint: %w", err)
	}
	for deadline := asked.Add(timeout); time.Now().Before(deadline); time.Sleep(requestPoll) {
		if res := generationSince(st, before); res != nil {
			return res, nil
		}
		if f := st.LastCheckpointFailure(); f != nil && !f.Time.Before(asked) {
			return nil, fmt.Errorf("checkpoint failed: %s", f.Error)
		}
	}
	return nil, fmt.Errorf("no checkpoint in %s within %v of the request: is the job's supervisor busy with a long checkpoint? `ckpt-apptainer status` outside the job says", dir, timeout)
}

// generationSince describes the newest generation in st when it is newer
// than before. It is not verified: that would read all of its data from
// inside the job.
func generationSince(st *image.Store, before int) *CheckpointResult {
	gens, err := st.Generations()
	if err != nil || len(gens) == 0 || gens[len(gens)-1] <= before {
		return nil
	}
	g, err := st.Open(gens[len(gens)-1])
	if err != nil {
		return nil
	}
	s := g.Manifest.Stats
	return &CheckpointResult{Generation: g.Gen, Bytes: s.Bytes, Duration: s.Duration, Stopped: s.StoppedFor}
}
