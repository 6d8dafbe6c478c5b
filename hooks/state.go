package hooks

import (
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// State is the JSON object a hook reads on stdin. Its first fields are
// those of the runtime-spec container state, so tools written for OCI
// hooks find what they expect; the rest says which checkpoint it is about.
type State struct {
	// OCIVersion is the runtime-spec version (specs.Version when unset).
	OCIVersion string `json:"ociVersion"`
	// ID is the job's id (the Slurm job id, or what the supervisor names
	// the job by).
	ID string `json:"id"`
	// Status is the job's state: "running", "stopped" (no job process
	// left, e.g. after a checkpoint with --kill) or "creating" (restore
	// under way).
	Status specs.ContainerState `json:"status"`
	// PID is the host pid of the job's main process; 0 when there is none.
	PID int `json:"pid"`
	// Bundle is the checkpoint directory, as for OCI tools the bundle is
	// the container's directory (CheckpointDir when unset).
	Bundle      string            `json:"bundle"`
	Annotations map[string]string `json:"annotations,omitempty"`

	// Event is the event the hook runs for (set by Run).
	Event Event `json:"event"`
	// CheckpointDir is the job's checkpoint directory.
	CheckpointDir string `json:"checkpointDir"`
	// Generation is the generation being taken (precheckpoint), just
	// taken (postcheckpoint) or being restored (prerestore, postrestore).
	Generation int `json:"generation"`
	// Argv is the job's command line.
	Argv []string `json:"argv,omitempty"`
	// Container describes the Apptainer container of a container job;
	// nil for a plain job.
	Container *Container `json:"container,omitempty"`
	// SlurmJobID is $SLURM_JOB_ID when the job runs under Slurm.
	SlurmJobID string `json:"slurmJobId,omitempty"`
	// Error says why the checkpoint failed, for a postcheckpoint after an
	// attempt that committed nothing; empty after a committed checkpoint.
	Error string `json:"error,omitempty"`
}

// Container describes the container of a container job.
type Container struct {
	// Image is the container image path.
	Image string `json:"image"`
	// RuntimePID is the host pid of Apptainer's starter; 0 if unknown.
	RuntimePID int `json:"runtimePid,omitempty"`
	// AppPID is the host pid of the application's first process, whose
	// namespaces container hooks enter; 0 when none runs.
	AppPID int `json:"appPid"`
}

// Environment variables Run sets for every hook, after the entry's env.
const (
	EnvEvent      = "CKPT_APPTAINER_EVENT"
	EnvDir        = "CKPT_APPTAINER_DIR"
	EnvGeneration = "CKPT_APPTAINER_GENERATION"
	// EnvError is set only when State.Error is not empty.
	EnvError = "CKPT_APPTAINER_ERROR"
)

// hookEnv is the environment of a hook: base (the caller's), then the
// entry's env, then the CKPT_APPTAINER_* variables from s. A later value
// of a key replaces an earlier one in place.
func hookEnv(base, entry []string, s State) []string {
	env := make([]string, 0, len(base)+len(entry)+4)
	at := make(map[string]int)
	set := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := at[k]; ok {
			env[i] = kv
			return
		}
		at[k] = len(env)
		env = append(env, kv)
	}
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); k != EnvError {
			set(kv)
		}
	}
	for _, kv := range entry {
		set(kv)
	}
	set(EnvEvent + "=" + string(s.Event))
	set(EnvDir + "=" + s.CheckpointDir)
	set(EnvGeneration + "=" + strconv.Itoa(s.Generation))
	if s.Error != "" {
		set(EnvError + "=" + s.Error)
	}
	return env
}
