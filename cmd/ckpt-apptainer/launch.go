package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

func launchCommand() *cli.Command {
	return &cli.Command{
		Name:      "launch",
		Usage:     "run a job under checkpoint supervision",
		ArgsUsage: "-- CMD [ARGS...]",
		Flags:     jobFlags(),
		Action:    launch,
	}
}

func launch(c *cli.Context) error {
	argv := c.Args().Slice()
	if len(argv) == 0 {
		return fmt.Errorf("launch: no command given; usage: ckpt-apptainer launch [flags] -- CMD [ARGS...]")
	}
	return supervised(c, func(s *supervisor) error {
		if gens, _ := s.store.Generations(); len(gens) > 0 {
			s.log.Warnf("checkpoint directory %s already holds generations up to %d; this job's checkpoints continue the numbering (use `restart` to resume the old job)", s.dir, gens[len(gens)-1])
		}
		return launchJob(c, s, argv)
	})
}

// supervised opens and locks the checkpoint directory, runs body as the
// job's supervisor and releases everything; then, when a signal stopped
// the job and --requeue was given, asks Slurm to requeue it. The requeue
// comes last because Slurm ends what is left of the job step.
func supervised(c *cli.Context, body func(*supervisor) error) error {
	s, err := openSupervisor(c)
	if err != nil {
		return err
	}
	err = body(s)
	s.close()
	if s.requeueNow {
		if rerr := requeueSlurmJob(s.log, s.dir); rerr != nil {
			s.log.Error(rerr)
		}
	}
	return err
}

// launchJob starts argv as a new job and supervises it until it ends.
func launchJob(c *cli.Context, s *supervisor, argv []string) error {
	if err := s.store.ClearFinished(); err != nil {
		return err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	s.job = image.Job{Argv: argv, Env: os.Environ(), Cwd: cwd, UID: os.Getuid(), GID: os.Getgid()}
	s.container = parseContainer(argv, s.job.Env)
	if s.container != nil && s.container.refused != nil {
		s.log.Warnf("checkpoints of this job will be refused: %v", s.container.refused)
	}
	var instanceState string
	if s.container.isInstance() && s.container.refused == nil {
		if instanceState, err = s.claimInstance(); err != nil {
			return fmt.Errorf("launch: %w", err)
		}
	}
	if err := s.makeCgroup(c); err != nil {
		return err
	}
	opts := namespaces.Options{TimeNamespace: !c.Bool("no-timens"), OutliveMain: s.container.isInstance()}
	if err := s.startSandbox(opts); err != nil {
		return err
	}
	hostPID, nsPID, err := s.sb.Run(argv, s.job.Env, cwd)
	if err != nil {
		s.sb.Kill()
		return err
	}
	s.jobPID = hostPID
	s.log.Debugf("job %q started: pid %d (%d in the sandbox)", commandLine(argv), hostPID, nsPID)
	if instanceState != "" {
		go s.publishInstance(instanceState)
	}
	return s.supervise()
}
