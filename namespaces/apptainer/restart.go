package apptainer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// execRefuses are the options of run and shell that exec does not accept;
// RestartArgv drops them, since the restored application, not a runscript
// or a shell, is what the new container runs.
var execRefuses = map[string]bool{"runscript-timeout": true, "shell": true, "syos": true}

// RestartArgv returns the command line that has Apptainer build the
// recorded container again with command (the restorer's stub, e.g.
// ["/proc/self/fd/7"]) as the container's command: the recorded argv with
// run and shell turned into exec, the image argument replaced by
// imagePath when it is not "", and the application's argv replaced by
// command. Every other option stays exactly as recorded.
func RestartArgv(rec *image.Container, imagePath string, command []string) ([]string, error) {
	if rec == nil {
		return nil, errors.New("restart command line: no container record")
	}
	if len(command) == 0 {
		return nil, errors.New("restart command line: no command to run in the container")
	}
	cmd, err := Parse(rec.Argv, rec.Env)
	if err != nil {
		return nil, fmt.Errorf("restart command line: recorded command: %w", err)
	}
	if cmd.ImageArg != rec.ImageArg {
		return nil, fmt.Errorf("restart command line: the record puts the image at argument %d, the recorded command line at %d", rec.ImageArg, cmd.ImageArg)
	}
	if cmd.Subcommand == InstanceStart {
		return instanceArgv(cmd, imagePath, command)
	}
	drop := map[int]bool{}
	for _, o := range cmd.Options {
		if !execRefuses[o.Name] || o.Arg < 0 {
			continue
		}
		if o.Grouped {
			return nil, fmt.Errorf("restart command line: option --%s is grouped with others in %q: write it on its own to restart with exec", o.Name, rec.Argv[o.Arg])
		}
		for i := o.Arg; i < o.Arg+o.N; i++ {
			drop[i] = true
		}
	}
	out := make([]string, 0, len(rec.Argv)+len(command))
	out = append(out, rec.Argv[:cmd.SubcommandArg]...)
	out = append(out, Exec)
	for i := cmd.SubcommandArg + 1; i < cmd.ImageArg; i++ {
		if !drop[i] {
			out = append(out, rec.Argv[i])
		}
	}
	out = append(out, imageArgument(cmd, imagePath))
	return append(out, command...), nil
}

// imageArgument is the image argument of a restart: the recorded one, or
// imagePath when it is not "".
func imageArgument(cmd *Command, imagePath string) string {
	img := cmd.Argv[cmd.ImageArg]
	if imagePath != "" {
		img = imagePath
	}
	if strings.HasPrefix(img, "-") {
		// Apptainer would read it as an option.
		img = "./" + img
	}
	return img
}

// StartscriptPath is where an instance's startscript is in its container.
const StartscriptPath = "/.singularity.d/startscript"

// instanceArgv is RestartArgv for `instance start`, which takes no
// command: the instance runs its startscript, so command (one executable
// on the host) is bound read-only over the startscript, and the
// startscript's arguments are dropped. The instance keeps its name.
func instanceArgv(cmd *Command, imagePath string, command []string) ([]string, error) {
	if len(command) != 1 || !strings.HasPrefix(command[0], "/") {
		return nil, fmt.Errorf("restart command line: an instance's startscript is replaced by one executable file given by absolute path, not %q", command)
	}
	if strings.HasPrefix(command[0], "/proc/self/") {
		// Apptainer resolves a bind's source in its own processes.
		return nil, fmt.Errorf("restart command line: %s cannot be bound into the instance: /proc/self names Apptainer's process there", command[0])
	}
	if strings.ContainsAny(command[0], ":,") {
		return nil, fmt.Errorf("restart command line: %s cannot be bound into the instance: its path holds ':' or ','", command[0])
	}
	out := make([]string, 0, len(cmd.Argv)+2)
	out = append(out, cmd.Argv[:cmd.SubcommandArg+2]...)
	out = append(out, "--bind", command[0]+":"+StartscriptPath+":ro")
	out = append(out, cmd.Argv[cmd.SubcommandArg+2:cmd.ImageArg]...)
	return append(out, imageArgument(cmd, imagePath), cmd.Instance), nil
}
