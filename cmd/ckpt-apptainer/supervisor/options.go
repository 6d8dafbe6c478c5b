package supervisor

import (
	"fmt"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// Options are a supervised job's settings, as launch, restart and run take
// them on the command line.
type Options struct {
	// CkptDir is the checkpoint directory; Instance names an Apptainer
	// instance, whose directory is used when CkptDir is empty.
	CkptDir  string
	Instance string
	// Interval is the time between periodic checkpoints; 0 takes them
	// only on request.
	Interval time.Duration
	// Keep is how many generations are kept; 0 keeps all.
	Keep int
	// Incremental writes only the pages that changed since the previous
	// generation.
	Incremental bool
	// PreCopy copies the job's memory while it runs before a periodic
	// checkpoint stops it, to copy only what changed meanwhile.
	PreCopy bool
	// Compress is how page data is compressed: "zstd", or "none" (or "").
	Compress string
	// CgroupParent is the writable cgroup the job cgroup is made in;
	// empty looks for one. NoCgroup stops the job with ptrace alone.
	CgroupParent string
	NoCgroup     bool
	// NoTimens gives the job no time namespace.
	NoTimens bool
	// Net is the job's network: NetHost or NetPrivate.
	Net string
	// Signal also ends the job with a final checkpoint, as SIGTERM does
	// (a name such as USR1).
	Signal string
	// Hooks is the user's hook configuration file.
	Hooks string
	// Requeue asks Slurm to requeue a job a signal stopped.
	Requeue bool
	// FirstCheckpoint is how long after launch the first checkpoint is
	// taken (when sooner than Interval); RequireCheckpoint ends a job
	// whose first checkpoint fails.
	FirstCheckpoint   time.Duration
	RequireCheckpoint bool
	// LocalLimit bounds the node-local file data a checkpoint saves (a
	// size such as 1GiB).
	LocalLimit string
	// DumpBuffer is the page data a checkpoint may hold in memory, in
	// MiB; -1 picks the default, 0 streams to disk.
	DumpBuffer int64

	// GPULockTimeout is how long a checkpoint waits for a GPU process's
	// running GPU work to finish; 0 picks gpu.DefaultLockTimeout.
	GPULockTimeout time.Duration

	// Image is the container image's new path for a restart after it
	// moved.
	Image string
	// NoRollback keeps what files gained after the checkpoint; Strict
	// refuses a file the job had open that was replaced.
	NoRollback bool
	Strict     bool
	// Force restarts a job that finished since its last checkpoint.
	Force bool

	// Version is the tool's version, recorded in each generation.
	Version string

	// Explicit names the flags the command line (or the environment)
	// set: a restart keeps the job's recorded settings for the others.
	Explicit map[string]bool
	// reuseSettings takes the recorded settings (restart and run).
	reuseSettings bool
}

// pageCodec turns --compress into the page file codec the engine takes.
func pageCodec(compress string) (string, error) {
	switch compress {
	case "", "none":
		return "", nil
	case image.CodecZstd:
		return image.CodecZstd, nil
	}
	return "", fmt.Errorf("--compress %q: want zstd or none", compress)
}

// The values of --net.
const (
	// NetHost leaves the job in the node's network namespace.
	NetHost = "host"
	// NetPrivate gives the job a network namespace of its own.
	NetPrivate = "private"
)

// checkNet validates --net.
func checkNet(net string) error {
	switch net {
	case NetHost, NetPrivate:
		return nil
	}
	return fmt.Errorf("--net %q: want host (the node's network, as programs run without the tool have it) or private (a network of the job's own, whose TCP connections between its processes can be checkpointed)", net)
}

// ExitStatus is the status the supervisor exits with when the job ended
// with one other than 0, or was stopped on purpose.
type ExitStatus int

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
