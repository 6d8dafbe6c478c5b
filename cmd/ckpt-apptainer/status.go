package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// statusCommand is `status`: what the running job's supervisor says of it.
func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the running job: pids, uptime, generations, the next checkpoint and how the last one went",
		Description: `status asks the supervisor of the checkpoint directory. With no job
running it says so, names the newest checkpoint, and exits 1.`,
		Flags: []cli.Flag{
			ckptDirFlag,
			instanceFlag,
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			dir, err := supervisor.CkptDir(c.String("ckpt-dir"), c.String("instance"))
			if err != nil {
				return err
			}
			js, err := supervisor.RequestStatus(dir)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(js)
			}
			printStatus(os.Stdout, js, time.Now())
			return nil
		},
	}
}

// printStatus renders js for a person, as of now.
func printStatus(w io.Writer, js *supervisor.JobStatus, now time.Time) {
	started := "launched"
	if js.RestoredFrom != 0 {
		started = fmt.Sprintf("restored from generation %d", js.RestoredFrom)
	}
	fmt.Fprintf(w, "job:         %s\n", supervisor.CommandLine(js.Command))
	fmt.Fprintf(w, "pid:         %d (supervisor %d)\n", js.JobPID, js.SupervisorPID)
	fmt.Fprintf(w, "running:     %v, %s at %s\n", now.Sub(js.Started).Round(time.Second), started, js.Started.Local().Format(time.DateTime))
	fmt.Fprintf(w, "directory:   %s\n", js.CkptDir)
	gens := "none"
	if len(js.Generations) > 0 {
		gens = image.JoinGenerations(js.Generations, ", ")
	}
	fmt.Fprintf(w, "generations: %s\n", gens)
	switch l := js.Last; {
	case l == nil:
		fmt.Fprintf(w, "last:        no checkpoint taken since the job started\n")
	case l.Error != "":
		fmt.Fprintf(w, "last:        FAILED %s ago (%d in a row): %s\n", now.Sub(l.Time).Round(time.Second), l.Failures, l.Error)
	default:
		fmt.Fprintf(w, "last:        generation %d, %s ago: %s in %v (job stopped %v)\n", l.Generation, now.Sub(l.Time).Round(time.Second),
			supervisor.HumanBytes(l.Bytes), l.Duration.Round(time.Millisecond), l.Stopped.Round(time.Millisecond))
	}
	next := "only on request (no --interval)"
	if js.NextCheckpoint != nil {
		next = fmt.Sprintf("in %v", js.NextCheckpoint.Sub(now).Round(time.Second))
		if js.Interval > 0 {
			next += fmt.Sprintf(" (every %v)", time.Duration(js.Interval))
		}
	}
	if js.CheckpointingSince != nil {
		next = fmt.Sprintf("being taken now, for %v", now.Sub(*js.CheckpointingSince).Round(time.Millisecond))
	}
	fmt.Fprintf(w, "next:        %s\n", next)
}
