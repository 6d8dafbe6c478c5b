package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/gpu"
)

// The commands that supervise a job (launch, restart, run) and their
// flags; what they do is package supervisor's.

// jobFlags are the flags launch and restart share.
func jobFlags() []cli.Flag {
	return []cli.Flag{
		ckptDirFlag,
		durationFlag("interval", []string{"i"}, []string{"CKPT_APPTAINER_INTERVAL", "DMTCP_CHECKPOINT_INTERVAL"}, 0, "checkpoint every `TIME`, in seconds (600) or as a duration (10m, 1h); 0: only on request"),
		&cli.IntFlag{Name: "keep", Value: 2, Usage: "keep the newest `N` generations (0: keep all); generations whose data a kept incremental one reads stay until none does"},
		&cli.BoolFlag{Name: "precopy", EnvVars: []string{"CKPT_APPTAINER_PRECOPY"}, Usage: "copy the job's memory to disk while it runs before a periodic checkpoint stops it, so that it is stopped only to copy what changed meanwhile (not for checkpoints that end the job, such as at SIGTERM)"},
		&cli.BoolFlag{Name: "incremental", EnvVars: []string{"CKPT_APPTAINER_INCREMENTAL"}, Usage: "write only the pages that changed since the previous generation (compared by checksum); the others are read from the generation that holds them"},
		&cli.StringFlag{Name: "compress", Value: "none", EnvVars: []string{"CKPT_APPTAINER_COMPRESS"}, Usage: "compress page data with `CODEC`: zstd (in 1 MiB blocks, on all cores; smaller checkpoints of repetitive memory, slower ones of incompressible data) or none"},
		&cli.StringFlag{Name: "cgroup-parent", Usage: "writable (delegated) cgroup `DIR` to create the job cgroup in (v2 directory or v1 freezer directory)"},
		&cli.BoolFlag{Name: "no-cgroup", Usage: "do not use a cgroup; stop the job with ptrace alone"},
		&cli.StringFlag{Name: "net", Value: supervisor.NetHost, EnvVars: []string{"CKPT_APPTAINER_NET"}, Usage: "the job's network: host (the node's, the default: servers the job runs are reachable from outside and it reaches everything the node does, but TCP and UDP sockets cannot be checkpointed) or private (a network of the job's own with loopback, and a user-mode stack to the outside where pasta or slirp4netns is installed: TCP and UDP between the job's processes are checkpointed, MPI on one node included)"},
		&cli.BoolFlag{Name: "no-timens", Usage: "do not give the job a time namespace (its CLOCK_MONOTONIC then jumps across a restart)"},
		&cli.StringFlag{Name: "signal", Usage: "also take a final checkpoint and stop the job on `SIG` (as on SIGTERM), e.g. USR1 for #SBATCH --signal=B:USR1@60"},
		hooksFlag,
		durationFlag("first-checkpoint", nil, nil, supervisor.DefaultFirstCheckpoint, "take a launched job's first checkpoint `TIME` after it starts, when --interval is longer (or with --require-checkpoint), so that a job that cannot be checkpointed is found out early; 0: at the first interval"),
		&cli.BoolFlag{Name: "require-checkpoint", EnvVars: []string{"CKPT_APPTAINER_REQUIRE_CHECKPOINT"}, Usage: fmt.Sprintf("end a job whose first checkpoint fails, with exit status %d, instead of letting it run on without any checkpoint (and no requeue)", supervisor.ExitNotCheckpointable)},
		&cli.BoolFlag{Name: "requeue", Usage: "once a signal stopped the job, ask Slurm to requeue it (scontrol requeue $SLURM_JOB_ID), unless Slurm requeues it itself or the job was cancelled"},
		&cli.StringFlag{Name: "local-limit", Value: "1GiB", Usage: "save up to `SIZE` of node-local files the job has open or mapped (tmpfs such as /dev/shm, files it writes on a local disk) in each checkpoint, so it can resume on another node; a checkpoint that needs more is refused, naming the file"},
		durationFlag("gpu-lock-timeout", nil, nil, gpu.DefaultLockTimeout, "at a checkpoint, wait up to `TIME` for the GPU work of the job's CUDA processes to finish before their device state is moved into host memory"),
		&cli.Int64Flag{Name: "dump-buffer", Value: -1, Usage: "hold up to `MIB` of page data in memory during a checkpoint, so the job runs on before the disk has caught up (-1: 64 MiB or a quarter of the available memory if less; more lets a job of that size run on before its memory is on disk)"},
	}
}

// hooksFlag is --hooks, the user's hooks file.
var hooksFlag = &cli.StringFlag{
	Name:  "hooks",
	Usage: "run the lifecycle hooks in `FILE` (JSON, see README) around checkpoints and restarts, after the site's ($CKPT_APPTAINER_HOOKS, else /etc/ckpt-apptainer/hooks.json)",
}

// ckptDirFlag is the --ckpt-dir flag shared by every command.
var ckptDirFlag = &cli.StringFlag{
	Name:  "ckpt-dir",
	Usage: "checkpoint directory (default: $CKPT_APPTAINER_DIR, else $DMTCP_CHECKPOINT_DIR, else ./ckpt)",
}

// instanceFlag names an Apptainer instance instead of its checkpoint
// directory.
var instanceFlag = &cli.StringFlag{
	Name:  "instance",
	Usage: "the job of Apptainer instance `NAME` (started with `ckpt-apptainer launch -- apptainer instance start IMAGE NAME`): use its checkpoint directory",
}

// runCommand is `run`: launch or restart, whichever the checkpoint
// directory calls for.
func runCommand() *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "resume the job from its newest good checkpoint if there is one, else launch it (for batch scripts that are requeued)",
		Description: `run is launch and restart in one: the only line an sbatch script on a
partition that preempts and requeues jobs needs:

   exec ckpt-apptainer run --interval 600 --requeue -- ./app args

The checkpoint directory decides: with no checkpoint, or after the job ran to
its end, CMD is launched; with a good checkpoint of CMD, the job is restored
from it (damaged newer generations are skipped with a warning); when every
generation is damaged, CMD starts from the beginning and the damaged ones are
left for inspection. A checkpoint of another command is refused.`,
		ArgsUsage: "-- CMD [ARGS...]",
		Flags:     restartFlags(),
		Action: func(c *cli.Context) error {
			return supervisor.Run(jobOptions(c), c.Args().Slice())
		},
	}
}

// launchCommand is `launch`.
func launchCommand() *cli.Command {
	return &cli.Command{
		Name:      "launch",
		Usage:     "run a job under checkpoint supervision",
		ArgsUsage: "-- CMD [ARGS...]",
		Flags:     jobFlags(),
		Action: func(c *cli.Context) error {
			return supervisor.Launch(jobOptions(c), c.Args().Slice())
		},
	}
}

// restartCommand is `restart`.
func restartCommand() *cli.Command {
	return &cli.Command{
		Name:      "restart",
		Usage:     "resume a job from its newest good checkpoint (or GENERATION)",
		ArgsUsage: "[GENERATION]",
		Flags: append(restartFlags(), instanceFlag,
			&cli.BoolFlag{Name: "force", Usage: "restart even though the job finished after its last checkpoint (it runs its end again)"}),
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return fmt.Errorf("restart: at most one GENERATION argument, got %d", c.NArg())
			}
			return supervisor.Restart(jobOptions(c), c.Args().First())
		},
	}
}

// restartFlags are the flags of restart and run.
func restartFlags() []cli.Flag {
	return append(jobFlags(),
		&cli.StringFlag{Name: "image", Usage: "the container image moved: restart with the image at `PATH` (it must be the same image)"},
		&cli.BoolFlag{Name: "no-rollback", Usage: "keep files the job writes at their current length instead of cutting them back to their length at checkpoint time"},
		&cli.BoolFlag{Name: "strict", Usage: "refuse to restart when a file the job had open was replaced since the checkpoint (other contents), instead of leaving it alone with a warning"},
	)
}

// jobOptions reads the flags of launch, restart and run.
func jobOptions(c *cli.Context) supervisor.Options {
	return supervisor.Options{
		CkptDir:           c.String("ckpt-dir"),
		Instance:          c.String("instance"),
		Interval:          durationOf(c, "interval"),
		Keep:              c.Int("keep"),
		Incremental:       c.Bool("incremental"),
		PreCopy:           c.Bool("precopy"),
		Compress:          c.String("compress"),
		CgroupParent:      c.String("cgroup-parent"),
		NoCgroup:          c.Bool("no-cgroup"),
		NoTimens:          c.Bool("no-timens"),
		Net:               c.String("net"),
		Signal:            c.String("signal"),
		Hooks:             c.String("hooks"),
		Requeue:           c.Bool("requeue"),
		FirstCheckpoint:   durationOf(c, "first-checkpoint"),
		RequireCheckpoint: c.Bool("require-checkpoint"),
		LocalLimit:        c.String("local-limit"),
		DumpBuffer:        c.Int64("dump-buffer"),
		GPULockTimeout:    durationOf(c, "gpu-lock-timeout"),
		Image:             c.String("image"),
		NoRollback:        c.Bool("no-rollback"),
		Strict:            c.Bool("strict"),
		Force:             c.Bool("force"),
		Version:           version,
		Explicit:          explicitFlags(c, supervisor.RecordedFlags()),
	}
}

// explicitFlags says which of names the command line or the environment
// set.
func explicitFlags(c *cli.Context, names []string) map[string]bool {
	set := map[string]bool{}
	for _, name := range names {
		if c.IsSet(name) {
			set[name] = true
		}
	}
	return set
}
