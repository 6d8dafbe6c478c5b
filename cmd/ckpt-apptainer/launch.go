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
	s, err := openSupervisor(c)
	if err != nil {
		return err
	}
	defer s.close()
	if gens, _ := s.store.Generations(); len(gens) > 0 {
		s.log.Warnf("checkpoint directory %s already holds generations up to %d; this job's checkpoints continue the numbering (use `restart` to resume the old job)", s.dir, gens[len(gens)-1])
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
