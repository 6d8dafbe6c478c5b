package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/cmd/ckpt-apptainer/supervisor"
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
			&cli.BoolFlag{Name: "json", Usage: "print the summary, with the manifest, as JSON"},
			&cli.BoolFlag{Name: "show-env", Usage: "show the values of environment variables whose names look secret (TOKEN, PASSWORD, ..._KEY, ...), hidden by default"},
		},
		Action: func(c *cli.Context) error {
			st, err := supervisor.OpenStore(c.String("ckpt-dir"), c.String("instance"))
			if err != nil {
				return err
			}
			g, err := inspectGeneration(c, st)
			if err != nil {
				return err
			}
			// The newest good generation has just verified; a named one
			// is opened as it is and verified here.
			var verr error
			if c.NArg() == 1 {
				verr = g.Verify()
			}
			r := summarize(st, g, verr)
			if !c.Bool("show-env") {
				r.Manifest = redactManifest(r.Manifest)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return printInspect(c.App.Writer, r)
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
		n, err := image.ParseGeneration(c.Args().First())
		if err != nil {
			return nil, fmt.Errorf("inspect: %w", err)
		}
		return st.Open(n)
	default:
		return nil, fmt.Errorf("inspect: at most one GENERATION argument, got %d", c.NArg())
	}
}

// printInspect writes the human-readable summary r, section by section.
func printInspect(w io.Writer, r *inspectReport) error {
	m := r.Manifest
	p := &printer{w: w}
	p.line("generation %d  %s", r.Generation, r.Dir)
	p.line("  created    %s", m.Created.Local().Format(time.DateTime+" MST"))
	p.line("  written by ckpt-apptainer %s (image format %d) on %s, kernel %s, %s", m.ToolVersion, m.FormatVersion, m.Host, m.Kernel, m.Arch)
	if m.Parent != 0 {
		p.line("  kind       %s", generationKind(m.Parent, m.Needs()))
	}
	if !r.Valid {
		p.line("  checksums  BAD: %s", r.Error)
	} else {
		refs := ""
		if len(m.Refs) > 0 {
			refs = fmt.Sprintf(", and %d of earlier generations", len(m.Refs))
		}
		p.line("  checksums  ok (%d files%s)", len(m.Files), refs)
	}
	for _, u := range r.Unreadable {
		p.line("  unreadable %s: %s", u.File, u.Error)
	}
	p.line("job")
	p.line("  command    %s", supervisor.CommandLine(m.Job.Argv))
	p.line("  cwd        %s", m.Job.Cwd)
	p.line("  uid/gid    %d/%d", m.Job.UID, m.Job.GID)
	if m.Job.MainPID != 0 {
		p.line("  main pid   %d", m.Job.MainPID)
	}
	s := m.Stats
	p.line("stats")
	compressed := ""
	if s.CompressedBytes > 0 {
		compressed = fmt.Sprintf(", compressed to %s", supervisor.HumanBytes(s.CompressedBytes))
	}
	if m.Parent != 0 {
		p.line("  size       %s (%s of pages written%s, %s unchanged in earlier generations)", supervisor.HumanBytes(s.Bytes), supervisor.HumanBytes(s.PageBytes), compressed, supervisor.HumanBytes(s.RefBytes))
	} else {
		p.line("  size       %s (%s of pages%s)", supervisor.HumanBytes(s.Bytes), supervisor.HumanBytes(s.PageBytes), compressed)
	}
	p.line("  tasks      %d processes, %d threads", s.Processes, s.Threads)
	p.line("  timing     checkpoint %v, job stopped %v, frozen %v (%s)", s.Duration.Round(time.Millisecond),
		s.StoppedFor.Round(time.Millisecond), s.FrozenFor.Round(time.Millisecond), orNone(s.FreezeMethod))
	printProcesses(p, r)
	printMemory(p, r)
	printFDs(p, r)
	printFiles(p, m.LocalFiles, r.References)
	printGPU(p, m.GPU)
	printIPC(p, m.IPC)
	printNamespaces(p, m.Namespaces)
	printMounts(p, m.Mounts)
	printCgroup(p, m.Cgroup)
	if m.Container == nil {
		p.line("container  none (a plain job)")
	} else {
		printContainer(p, m.Container)
	}
	printHooks(p, r.Hooks)
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
	p.line("  command    %s", supervisor.CommandLine(ct.Argv))
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
	p.line("             %s, mtime %s", supervisor.HumanBytes(img.Size), img.MTime.Local().Format(time.DateTime+" MST"))
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
	p.table("    ", mountRows(ct.Mounts))
}

// printNamespaces writes the sandbox's namespaces: on one line when no
// paths were recorded, one namespace a line with its path otherwise.
func printNamespaces(p *printer, ns []specs.LinuxNamespace) {
	if !slices.ContainsFunc(ns, func(n specs.LinuxNamespace) bool { return n.Path != "" }) {
		p.line("sandbox namespaces  %s", namespaceList(ns))
		return
	}
	p.line("sandbox namespaces (%d)", len(ns))
	rows := make([][]string, len(ns))
	for i, n := range ns {
		rows[i] = []string{string(n.Type), orNone(n.Path)}
	}
	p.table("  ", rows)
}

// namespaceList names namespace kinds, "none recorded" for none.
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

// table writes rows as aligned columns, each line after indent; nothing
// for no rows.
func (p *printer) table(indent string, rows [][]string) {
	if p.err != nil || len(rows) == 0 {
		return
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s%s\n", indent, strings.Join(r, "\t"))
	}
	p.err = tw.Flush()
}
