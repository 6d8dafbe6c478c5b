package apptainer

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// ErrNotApptainer is returned by Parse when the command is not an
// apptainer or singularity command at all: the caller treats the job as a
// plain one.
var ErrNotApptainer = errors.New("not an apptainer command")

// ErrUnsupported is wrapped by every error that refuses an Apptainer
// command line ckpt-apptainer cannot checkpoint.
var ErrUnsupported = errors.New("cannot be checkpointed")

// Subcommand names as Command.Subcommand and image.Container.Subcommand
// hold them.
const (
	Exec          = "exec"
	Run           = "run"
	Shell         = "shell"
	InstanceStart = "instance start"
)

// Command is a parsed Apptainer command line.
type Command struct {
	// Runtime is the base name of argv[0]: "apptainer" or "singularity".
	Runtime string
	// Argv is the command line as given.
	Argv []string
	// Subcommand is Exec, Run, Shell or InstanceStart; SubcommandArg the
	// index in Argv of its (first) word.
	Subcommand    string
	SubcommandArg int
	// Image is the image argument as written, ImageArg its index in Argv.
	Image    string
	ImageArg int
	// Instance is the instance name of `instance start`.
	Instance string
	// Args is the application's argv after the image (after the instance
	// name for `instance start`): the command for exec, the runscript's or
	// startscript's arguments for run and instance start.
	Args []string
	// Options are the options in command-line order, global ones first.
	Options []Option
	// Binds are the host paths bound in by --bind/-B, --mount, --home and
	// the APPTAINER_BIND family of environment variables, sources as
	// written (possibly relative).
	Binds []image.Bind
	// PIDNamespace tells whether the command asks for a PID namespace of
	// its own (--pid, --containall, --compat, --fusemount or their
	// environment variables, and no --no-pid).
	PIDNamespace bool
}

// Option is one option on an Apptainer command line.
type Option struct {
	// Name is the option's long name, without dashes.
	Name string
	// Value is the option's value; "true" (or the explicit --opt=value)
	// for a boolean option.
	Value string
	// Arg is the index in Argv where the option starts and N the number of
	// words it takes there (2 for "--bind SPEC", 1 for "--bind=SPEC").
	// Several short options grouped in one word ("-ec") share Arg, with
	// Grouped set.
	Arg     int
	N       int
	Grouped bool
	// Global is set for options of the apptainer command itself.
	Global bool
}

// has tells whether the boolean option name is set, on the command line
// or through its environment variables; the last occurrence counts, as
// in Apptainer.
func (c *Command) has(name string) bool {
	set := false
	for _, o := range c.Options {
		if o.Name == name {
			set = boolValue(o.Value)
		}
	}
	return set
}

// values returns the values of option name in command-line order.
func (c *Command) values(name string) []string {
	var out []string
	for _, o := range c.Options {
		if o.Name == name {
			out = append(out, o.Value)
		}
	}
	return out
}

// Parse reads an Apptainer command line: argv as the job runs it, env its
// environment (for the APPTAINER_* variables that act like options).
// It returns ErrNotApptainer when argv[0] is not apptainer or singularity,
// and an error wrapping ErrUnsupported, saying why and what to do, for
// an Apptainer command that cannot be checkpointed.
func Parse(argv []string, env []string) (*Command, error) {
	if len(argv) == 0 {
		return nil, ErrNotApptainer
	}
	base := filepath.Base(argv[0])
	if base != "apptainer" && base != "singularity" {
		return nil, ErrNotApptainer
	}
	c := &Command{Runtime: base, Argv: argv, ImageArg: -1, SubcommandArg: -1}
	p := parser{argv: argv, cmd: c}
	i, err := p.options(1, globalFlags, scAll, true)
	if err != nil {
		return nil, err
	}
	if i >= len(argv) {
		return nil, fmt.Errorf("%s: no subcommand: %w", base, ErrUnsupported)
	}
	sc, err := c.subcommand(i)
	if err != nil {
		return nil, err
	}
	i = c.SubcommandArg + len(strings.Fields(c.Subcommand))
	if i, err = p.options(i, actionFlags, sc, false); err != nil {
		return nil, err
	}
	if i >= len(argv) {
		return nil, fmt.Errorf("%s %s: no image argument", base, c.Subcommand)
	}
	c.ImageArg, c.Image = i, argv[i]
	i++
	if sc == scInstance {
		if i >= len(argv) {
			return nil, fmt.Errorf("%s instance start: no instance name after the image", base)
		}
		c.Instance = argv[i]
		i++
	}
	c.Args = argv[i:]
	if c.Subcommand == Exec && len(c.Args) == 0 {
		return nil, fmt.Errorf("%s exec: no command after the image", base)
	}
	c.addEnvOptions(env)
	if c.has("help") {
		return nil, fmt.Errorf("%s %s --help: %w: it runs no container", base, c.Subcommand, ErrUnsupported)
	}
	if err := c.checkImage(); err != nil {
		return nil, err
	}
	if err := c.checkOptions(); err != nil {
		return nil, err
	}
	if c.Binds, err = c.binds(env); err != nil {
		return nil, err
	}
	c.PIDNamespace = (c.has("pid") || c.has("containall") || c.has("compat") || len(c.values("fusemount")) > 0) && !c.has("no-pid")
	return c, nil
}

// subcommand recognizes the subcommand starting at argv[i].
func (c *Command) subcommand(i int) (scope, error) {
	c.SubcommandArg = i
	switch w := c.Argv[i]; w {
	case Exec:
		c.Subcommand = Exec
		return scExec, nil
	case Run:
		c.Subcommand = Run
		return scRun, nil
	case Shell:
		c.Subcommand = Shell
		return scShell, nil
	case "instance":
		if i+1 < len(c.Argv) && c.Argv[i+1] == "start" {
			c.Subcommand = InstanceStart
			return scInstance, nil
		}
		what := "instance"
		if i+1 < len(c.Argv) {
			what += " " + c.Argv[i+1]
		}
		return 0, fmt.Errorf("%s %s %w: of the instance commands only `instance start` starts a container", c.Runtime, what, ErrUnsupported)
	default:
		return 0, fmt.Errorf("%s %s %w: only exec, run, shell and instance start run a job in a container", c.Runtime, w, ErrUnsupported)
	}
}

// parser walks the options of one command level.
type parser struct {
	argv []string
	cmd  *Command
}

// options parses the options starting at argv[i] against table and returns
// the index of the first word that is not an option (after a "--", which
// ends the options). Apptainer stops at the first non-option too: what
// follows the image belongs to the application.
func (p *parser) options(i int, table []flagSpec, sc scope, global bool) (int, error) {
	where := p.cmd.Runtime
	if !global {
		where += " " + p.cmd.Subcommand
	}
	for i < len(p.argv) {
		w := p.argv[i]
		switch {
		case w == "--":
			return i + 1, nil
		case strings.HasPrefix(w, "--"):
			name, val, hasVal := strings.Cut(w[2:], "=")
			f, ok := lookupLong(table, name, sc)
			if !ok {
				return 0, fmt.Errorf("%s: unknown option --%s (ckpt-apptainer knows the options of apptainer 1.4)", where, name)
			}
			o := Option{Name: f.long, Value: val, Arg: i, N: 1, Global: global}
			switch {
			case f.value && !hasVal:
				if i+1 >= len(p.argv) {
					return 0, fmt.Errorf("%s: option --%s needs a value", where, name)
				}
				o.Value, o.N = p.argv[i+1], 2
			case !f.value && !hasVal:
				o.Value = "true"
			}
			p.cmd.Options = append(p.cmd.Options, o)
			i += o.N
		case strings.HasPrefix(w, "-") && len(w) > 1:
			n, err := p.shorts(i, table, sc, global, where)
			if err != nil {
				return 0, err
			}
			i += n
		default:
			return i, nil
		}
	}
	return i, nil
}

// shorts parses a word of grouped short options ("-ec", "-B/a:/b",
// "-B" "/a:/b") and returns how many words it used.
func (p *parser) shorts(i int, table []flagSpec, sc scope, global bool, where string) (int, error) {
	w := p.argv[i]
	grouped := len(w) > 2
	for j := 1; j < len(w); j++ {
		f, ok := lookupShort(table, w[j], sc)
		if !ok {
			return 0, fmt.Errorf("%s: unknown option -%c in %q", where, w[j], w)
		}
		o := Option{Name: f.long, Value: "true", Arg: i, N: 1, Grouped: grouped, Global: global}
		if f.value {
			rest := strings.TrimPrefix(w[j+1:], "=")
			if j+1 < len(w) {
				o.Value = rest
				p.cmd.Options = append(p.cmd.Options, o)
				return 1, nil
			}
			if i+1 >= len(p.argv) {
				return 0, fmt.Errorf("%s: option -%c needs a value", where, w[j])
			}
			o.Value, o.N = p.argv[i+1], 2
			p.cmd.Options = append(p.cmd.Options, o)
			return 2, nil
		}
		p.cmd.Options = append(p.cmd.Options, o)
	}
	return 1, nil
}

// envOptions are the options an APPTAINER_<KEY> (or legacy SINGULARITY_<KEY>)
// environment variable sets, for those that decide whether and how the
// job can be checkpointed.
var envOptions = []struct {
	name string
	keys []string
}{
	{"fakeroot", []string{"FAKEROOT"}},
	{"writable", []string{"WRITABLE"}},
	{"writable-tmpfs", []string{"WRITABLE_TMPFS"}},
	{"compat", []string{"COMPAT"}},
	{"nv", []string{"NV"}},
	{"nvccli", []string{"NVCCLI"}},
	{"rocm", []string{"ROCM"}},
	{"fusemount", []string{"FUSESPEC"}},
	{"overlay", []string{"OVERLAY", "OVERLAYIMAGE"}},
	{"net", []string{"NET", "UNSHARE_NET"}},
	{"network", []string{"NETWORK"}},
	{"boot", []string{"BOOT"}},
	{"dmtcp-launch", []string{"DMTCP_LAUNCH"}},
	{"dmtcp-restart", []string{"DMTCP_RESTART"}},
	{"pid", []string{"PID", "UNSHARE_PID"}},
	{"containall", []string{"CONTAINALL"}},
	{"scratch", []string{"SCRATCH", "SCRATCHDIR"}},
	{"workdir", []string{"WORKDIR"}},
}

// addEnvOptions appends the options set through environment variables,
// after the command line's, unless the command line sets them: Apptainer
// lets an option on the command line override its variable.
func (c *Command) addEnvOptions(env []string) {
	for _, eo := range envOptions {
		if len(c.values(eo.name)) > 0 {
			continue
		}
		for _, key := range eo.keys {
			if v, ok := envValue(env, key); ok && v != "" {
				c.Options = append(c.Options, Option{Name: eo.name, Value: v, Arg: -1})
				break
			}
		}
	}
}

// envValue looks up APPTAINER_<key>, then SINGULARITY_<key>.
func envValue(env []string, key string) (string, bool) {
	for _, prefix := range []string{"APPTAINER_", "SINGULARITY_"} {
		if v, ok := lookupEnv(env, prefix+key); ok {
			return v, true
		}
	}
	return "", false
}

// lookupEnv returns the last value of name in env, as getenv would.
func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// boolValue reads a boolean option or variable the way Apptainer does
// (strconv.ParseBool's spellings); anything else counts as false.
func boolValue(v string) bool {
	switch v {
	case "1", "t", "T", "true", "TRUE", "True":
		return true
	}
	return false
}
