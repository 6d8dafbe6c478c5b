package image

import (
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Container records the Apptainer container a job's application ran in:
// enough to have Apptainer build the same container again at restart and
// to tell the user what changed when it cannot.
type Container struct {
	// Runtime is the container runtime's command name as the job ran it
	// ("apptainer" or "singularity"), Version its `--version` output.
	Runtime string `json:"runtime"`
	Version string `json:"version,omitempty"`
	// Argv is the runtime's full command line as the job ran it; Env and
	// Dir its environment and working directory.
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	// Subcommand is exec, run, shell or "instance start"; Instance the
	// instance name where there is one.
	Subcommand string `json:"subcommand"`
	Instance   string `json:"instance,omitempty"`
	// ImageArg is the index in Argv of the image argument.
	ImageArg int            `json:"image_arg"`
	Image    ContainerImage `json:"image"`
	Binds    []Bind         `json:"binds,omitempty"`
	// Namespaces are the application's namespaces (types only, no paths);
	// Mounts its mount table as the container saw it.
	Namespaces []specs.LinuxNamespace `json:"namespaces,omitempty"`
	Mounts     []specs.Mount          `json:"mounts,omitempty"`
	// RuntimePID is the pid (in the job's PID namespace) of the process
	// that started the application's main process and waits for it
	// (Apptainer's starter), InnerPIDNamespace whether the application
	// has a PID namespace of its own (--pid, --containall), whose init is
	// Apptainer's.
	RuntimePID        int  `json:"runtime_pid"`
	InnerPIDNamespace bool `json:"inner_pid_namespace,omitempty"`
}

// ContainerImage identifies the image a container was built from.
type ContainerImage struct {
	Path  string    `json:"path"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
	// Digest is "sha256:<hex>" of the image file's contents.
	Digest string `json:"digest"`
}

// Bind is one host path bound into the container.
type Bind struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Options     string `json:"options,omitempty"`
}
