package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces/apptainer"
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
	if s.container = parseContainer(argv, s.job.Env); s.container != nil && s.container.cmd != nil && s.container.cmd.Subcommand == apptainer.InstanceStart {
		// The instance's daemon outlives its launcher, whose exit ends
		// the job and with it the instance.
		return fmt.Errorf("launch: %s instance start: Apptainer instances are not supported yet; run the application with `%s exec` or `%s run`",
			s.container.cmd.Runtime, s.container.cmd.Runtime, s.container.cmd.Runtime)
	}
	if s.container != nil && s.container.refused != nil {
		s.log.Warnf("checkpoints of this job will be refused: %v", s.container.refused)
	}
	if err := s.makeCgroup(c); err != nil {
		return err
	}
	if err := s.startSandbox(namespaces.Options{TimeNamespace: !c.Bool("no-timens")}); err != nil {
		return err
	}
	hostPID, nsPID, err := s.sb.Run(argv, s.job.Env, cwd)
	if err != nil {
		s.sb.Kill()
		return err
	}
	s.jobPID = hostPID
	s.log.Debugf("job %q started: pid %d (%d in the sandbox)", commandLine(argv), hostPID, nsPID)
	return s.supervise()
}
