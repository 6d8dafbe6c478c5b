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

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == namespaces.InitArg {
		namespaces.InitMain()
	}
	app := &cli.App{
		Name:    "ckpt-apptainer",
		Usage:   "checkpoint and restart batch jobs and Apptainer containers, unprivileged",
		Version: version,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "debug", Usage: "log the engine's steps"},
		},
		Before: func(c *cli.Context) error {
			logrus.SetOutput(os.Stderr)
			logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
			if c.Bool("debug") {
				logrus.SetLevel(logrus.DebugLevel)
			}
			// A test switch with a typo must not pass for a fallback run.
			_, err := kernel.ParseDisable(os.Getenv(kernel.EnvDisable))
			return err
		},
		Commands: []*cli.Command{
			runCommand(),
			launchCommand(),
			restartCommand(),
			checkpointCommand(),
			listCommand(),
			inspectCommand(),
			checkCommand(),
		},
	}
	if err := app.Run(os.Args); err != nil {
		// The job's own exit status, passed through with no message.
		var st supervisor.ExitStatus
		if errors.As(err, &st) {
			os.Exit(int(st))
		}
		fmt.Fprintf(os.Stderr, "ckpt-apptainer: %v\n", err)
		os.Exit(1)
	}
}
