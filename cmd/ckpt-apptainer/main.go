// Command ckpt-apptainer checkpoints and restarts batch jobs, plain
// processes and Apptainer containers alike, without root.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == namespaces.InitArg {
		namespaces.InitMain()
	}
	if err := newApp().Run(os.Args); err != nil {
		// The job's own exit status, passed through with no message.
		var st supervisor.ExitStatus
		if errors.As(err, &st) {
			os.Exit(int(st))
		}
		fmt.Fprintf(os.Stderr, "ckpt-apptainer: %v\n", err)
		os.Exit(1)
	}
}

// newApp is the command line: every command, its flags and its help.
func newApp() *cli.App {
	return &cli.App{
		Name:    "ckpt-apptainer",
		Usage:   "checkpoint and restart batch jobs and Apptainer containers, unprivileged",
		Version: version,
		Description: `A job wrapped once is checkpointed periodically and when the scheduler
preempts it, and resumes from its newest good checkpoint when it runs again:

    ckpt-apptainer run --interval 10m --requeue -- ./app args
    ckpt-apptainer run --interval 10m -- apptainer exec image.sif app args

The supervisor freezes the job's cgroup, saves every process (memory, threads,
files, namespaces) in a generation of the checkpoint directory, and restores
the job in a cgroup of its own. No root, no setuid helper, no LD_PRELOAD and no
change to the application. The README has the details: supported kernels,
what a job may use, Slurm scripts, hooks and the image format.`,
		Flags: []cli.Flag{debugFlag, logFormatFlag},
		// Completion scripts (generate bash|zsh) ask the binary itself.
		EnableBashCompletion: true,
		Before: func(c *cli.Context) error {
			logrus.SetOutput(os.Stderr)
			f, err := logFormatter(c.String("log-format"), os.Stderr)
			if err != nil {
				return err
			}
			logrus.SetFormatter(f)
			if c.Bool("debug") {
				logrus.SetLevel(logrus.DebugLevel)
			}
			// A test switch with a typo must not pass for a fallback run.
			_, err = kernel.ParseDisable(os.Getenv(kernel.EnvDisable))
			return err
		},
		Commands: withCommonFlags([]*cli.Command{
			runCommand(),
			launchCommand(),
			restartCommand(),
			checkpointCommand(),
			statusCommand(),
			listCommand(),
			inspectCommand(),
			checkCommand(),
			versionCommand(),
			generateCommand(),
		}),
	}
}
