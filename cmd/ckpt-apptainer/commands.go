package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func checkpointCommand() *cli.Command {
	return &cli.Command{
		Name:  "checkpoint",
		Usage: "checkpoint the running job now",
		Flags: []cli.Flag{
			ckptDirFlag,
			&cli.BoolFlag{Name: "kill", Usage: "stop the job once the checkpoint is safely on disk"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			durationFlag("timeout", nil, nil, 30*time.Minute, "how long to wait for the checkpoint (`TIME`: seconds or a duration)"),
			instanceFlag,
		},
		Action: func(c *cli.Context) error {
			dir, err := supervisor.CkptDir(c.String("ckpt-dir"), c.String("instance"))
			if err != nil {
				return err
			}
			request := supervisor.RequestCheckpoint
			if supervisor.InsideJob() {
				request = supervisor.RequestFromInside
			}
			var onProgress func(string, int64, int64)
			endProgress := func() {}
			if !c.Bool("json") {
				onProgress, endProgress = supervisor.ClientProgress(os.Stderr)
			}
			res, err := request(dir, c.Bool("kill"), durationOf(c, "timeout"), onProgress)
			endProgress()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(res)
			}
			fmt.Printf("generation %d: %s in %v (job stopped %v)\n", res.Generation, supervisor.HumanBytes(res.Bytes),
				res.Duration.Round(time.Millisecond), res.Stopped.Round(time.Millisecond))
			return nil
		},
	}
}

// listEntry is one generation as `list --json` prints it.
type listEntry struct {
	Generation int       `json:"generation"`
	Time       time.Time `json:"time"`
	SizeBytes  int64     `json:"size_bytes"`
	Processes  int       `json:"processes"`
	Valid      bool      `json:"valid"`
	Latest     bool      `json:"latest"`
	Error      string    `json:"error,omitempty"`
	// RestoreFailed is why a restart could not restore the generation.
	RestoreFailed string `json:"restore_failed,omitempty"`
	// Branch is why the generation is on a history branch.
	Branch string `json:"branch,omitempty"`
	// Parent is the generation an incremental one was written on; Needs
	// the generations whose data it reads.
	Parent int   `json:"parent,omitempty"`
	Needs  []int `json:"needs,omitempty"`
	// Finished, on the newest generation, says the job ran to its end
	// after it.
	Finished *image.Finished `json:"finished,omitempty"`
}

// generationKind says whether a generation is full, or which generations
// an incremental one reads.
func generationKind(parent int, needs []int) string {
	if parent == 0 {
		return "full"
	}
	if len(needs) == 0 {
		return fmt.Sprintf("incremental on %d, all pages changed", parent)
	}
	return fmt.Sprintf("incremental on %d, reads %s", parent, image.JoinGenerations(needs, ","))
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the checkpoint generations and whether they verify",
		Flags: []cli.Flag{
			ckptDirFlag,
			instanceFlag,
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		},
		Action: func(c *cli.Context) error {
			st, err := supervisor.OpenStore(c.String("ckpt-dir"), c.String("instance"))
			if err != nil {
				return err
			}
			infos, err := st.List(true)
			if err != nil {
				return err
			}
			out := []listEntry{}
			for _, i := range infos {
				out = append(out, listEntry{Generation: i.Generation, Time: i.Time, SizeBytes: i.SizeBytes,
					Processes: i.Processes, Valid: i.Valid, Latest: i.Latest, Error: i.Error, RestoreFailed: i.RestoreFailed,
					Branch: i.Branch, Parent: i.Parent, Needs: i.Needs})
			}
			fin, err := st.Finished()
			if err != nil {
				return err
			}
			if fin != nil && len(out) > 0 {
				out[len(out)-1].Finished = fin
			}
			// No generation is an error a script can test: the job has
			// nothing to resume from, or the directory is the wrong one.
			var none error
			if len(out) == 0 {
				none = fmt.Errorf("no checkpoint in %s", st.Dir)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
				return none
			}
			if none != nil {
				return none
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GENERATION\tTIME\tSIZE\tPROCESSES\tKIND\tSTATUS")
			for _, e := range out {
				status := "ok"
				if !e.Valid {
					status = "BAD: " + e.Error
				}
				if e.Latest {
					status += " (latest)"
				}
				if e.RestoreFailed != "" {
					status += "; a restart could not restore it, so restarts try older generations first"
				}
				if e.Branch != "" {
					status += fmt.Sprintf("; history branch: %s (restarts pass over it; `restart %d` takes it)", e.Branch, e.Generation)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", e.Generation, e.Time.Local().Format(time.DateTime), supervisor.HumanBytes(e.SizeBytes), e.Processes, generationKind(e.Parent, e.Needs), status)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if fin != nil {
				fmt.Printf("the job finished at %s with exit code %d after the last checkpoint: `run` starts it anew, `restart --force` runs its end again\n",
					fin.Time.Local().Format(time.DateTime), fin.ExitCode)
			}
			return nil
		},
	}
}
