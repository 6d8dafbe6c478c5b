package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// inspectCommand is `ckpt-apptainer inspect`.
func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what a checkpoint generation holds (default: the newest good one)",
		ArgsUsage: "[GENERATION]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: ckptDirFlag.Name, Aliases: []string{"dir"}, Usage: ckptDirFlag.Usage},
			instanceFlag,
			&cli.BoolFlag{Name: "json", Usage: "print the generation's manifest as JSON"},
		},
		Action: func(c *cli.Context) error {
			st, err := openCkptStore(c)
			if err != nil {
				return err
			}
			g, err := inspectGeneration(c, st)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(g.Manifest)
			}
			var verr error
			if c.NArg() == 1 {
				verr = g.Verify()
			}
			return printInspect(c.App.Writer, g, verr)
		},
	}
}

// inspectGeneration opens the generation named on the command line, or
// the newest one that verifies. A named generation is opened without
// verifying it: inspecting a damaged checkpoint is how a user finds out
// what it held (the summary says whether it verifies).
func inspectGeneration(c *cli.Context, st *image.Store) (*image.Generation, error) {
	switch c.NArg() {
	case 0:
		g, err := st.NewestGood(logrus.StandardLogger())
		if err != nil {
			return nil, fmt.Errorf("%w (checkpoint directory %s)", err, st.Dir)
		}
		return g, nil
	case 1:
		n, err := strconv.Atoi(c.Args().First())
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("inspect: GENERATION must be a positive number, got %q (see `ckpt-apptainer list`)", c.Args().First())
		}
		return st.Open(n)
	default:
		return nil, fmt.Errorf("inspect: at most one GENERATION argument, got %d", c.NArg())
	}
}

// printInspect writes the human-readable summary of generation g.
func printInspect(w io.Writer, g *image.Generation, verr error) error {
	m := g.Manifest
	p := &printer{w: w}
	p.line("generation %d  %s", m.Generation, g.Dir)
	p.line("  created    %s", m.Created.Local().Format(time.DateTime+" MST"))
	p.line("  written by ckpt-apptainer %s (image format %d) on %s, kernel %s, %s", m.ToolVersion, m.FormatVersion, m.Host, m.Kernel, m.Arch)
	if verr != nil {
		p.line("  checksums  BAD: %v", verr)
	} else {
		p.line("  checksums  ok (%d files)", len(m.Files))
	}
	p.line("job")
	p.line("  command    %s", commandLine(m.Job.Argv))
	p.line("  cwd        %s", m.Job.Cwd)
	p.line("  uid/gid    %d/%d", m.Job.UID, m.Job.GID)
	if m.Job.MainPID != 0 {
		p.line("  main pid   %d", m.Job.MainPID)
	}
	s := m.Stats
	p.line("stats")
	p.line("  size       %s (%s of pages)", humanBytes(s.Bytes), humanBytes(s.PageBytes))
	p.line("  tasks      %d processes, %d threads", s.Processes, s.Threads)
	p.line("  timing     checkpoint %v, job stopped %v, frozen %v (%s)", s.Duration.Round(time.Millisecond),
		s.StoppedFor.Round(time.Millisecond), s.FrozenFor.Round(time.Millisecond), orNone(s.FreezeMethod))
	if m.Cgroup != nil {
		p.line("  cgroup     %s %s", m.Cgroup.Version, m.Cgroup.Path)
	}
	if p.err != nil {
		return p.err
	}
	fmt.Fprintf(w, "processes (%d)\n", len(m.Processes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PID\tPPID\tCOMM")
	for _, pr := range m.Processes {
		fmt.Fprintf(tw, "  %d\t%d\t%s\n", pr.PID, pr.PPID, pr.Comm)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(m.Namespaces) > 0 {
		p.line("sandbox namespaces  %s", namespaceList(m.Namespaces))
	}
	if m.Container == nil {
		p.line("container  none (a plain job)")
		return p.err
	}
	printContainer(p, m.Container)
	return p.err
}

// printContainer writes the container record.
func printContainer(p *printer, ct *image.Container) {
	p.line("container")
	version := ""
	if ct.Version != "" {
		version = " (" + ct.Version + ")"
	}
	p.line("  runtime    %s%s", ct.Runtime, version)
	p.line("  command    %s", commandLine(ct.Argv))
	if ct.Dir != "" {
		p.line("  dir        %s", ct.Dir)
	}
	sub := ct.Subcommand
	if ct.Instance != "" {
		sub += " (instance " + ct.Instance + ")"
	}
	p.line("  subcommand %s", sub)
	img := ct.Image
	p.line("  image      %s", img.Path)
	p.line("             %s, mtime %s", humanBytes(img.Size), img.MTime.Local().Format(time.DateTime+" MST"))
	p.line("             %s", orNone(img.Digest))
	if len(ct.Binds) == 0 {
		p.line("  binds      none")
	}
	for i, b := range ct.Binds {
		label := "           "
		if i == 0 {
			label = "binds      "
		}
		opts := ""
		if b.Options != "" {
			opts = " (" + b.Options + ")"
		}
		p.line("  %s%s -> %s%s", label, b.Source, b.Destination, opts)
	}
	p.line("  namespaces %s", namespaceList(ct.Namespaces))
	if ct.RuntimePID != 0 {
		p.line("  runtime pid %d", ct.RuntimePID)
	}
	if ct.InnerPIDNamespace {
		p.line("  own pid namespace (Apptainer's init is its pid 1)")
	}
	p.line("  mounts     %d", len(ct.Mounts))
	if p.err != nil {
		return
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	for _, m := range ct.Mounts {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", m.Destination, m.Type, m.Source, strings.Join(m.Options, ","))
	}
	p.err = tw.Flush()
}

// namespaceList names namespace kinds, "none" for none.
func namespaceList(ns []specs.LinuxNamespace) string {
	if len(ns) == 0 {
		return "none recorded"
	}
	names := make([]string, len(ns))
	for i, n := range ns {
		names[i] = string(n.Type)
	}
	return strings.Join(names, ", ")
}

// orNone shows an empty string as "none".
func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// printer writes lines and keeps the first write error.
type printer struct {
	w   io.Writer
	err error
}

// line writes one formatted line.
func (p *printer) line(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format+"\n", args...)
	}
}
