package namespaces

import "github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"

// The supervisor and init talk over a socketpair on init's fd 3, one JSON
// value per message in each direction. The supervisor sends one request at a
// time and waits for its reply; init may send an exit event at any moment.

// Fds init is started with, besides stdin, stdout and stderr.
const (
	controlFd = 3
	exeFd     = 4
)

// Request operations.
const (
	opRun    = "run"
	opSpawn  = "spawn"
	opSignal = "signal"
)

// request is one supervisor-to-init message.
type request struct {
	Op string `json:"op"`
	// Run.
	Argv []string `json:"argv,omitempty"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	// Spawn. After is where the PID counter is left once the stub runs.
	ELF   []byte `json:"elf,omitempty"`
	PID   int    `json:"pid,omitempty"`
	After int    `json:"after,omitempty"`
	// Signal.
	Signal int `json:"signal,omitempty"`
}

// initConfig is the first message, sent by the supervisor right after init
// starts, with what init needs before it can report ready.
type initConfig struct {
	TimeNamespace bool  `json:"time_namespace"`
	MonotonicNs   int64 `json:"monotonic_ns"`
	BoottimeNs    int64 `json:"boottime_ns"`
	OutliveMain   bool  `json:"outlive_main,omitempty"`
	// Loopback brings the interface lo up: the job has a network
	// namespace of its own, which starts with every interface down.
	Loopback bool `json:"loopback,omitempty"`
	// Kernel is the supervisor's probe of the kernel: init uses it as it
	// is, and starts no probe process of its own in the job's namespace.
	Kernel *kernel.Set `json:"kernel"`
}

// message is one init-to-supervisor message: the ready report, a reply to
// the current request, or the exit event of the job's main process.
type message struct {
	Ready bool `json:"ready,omitempty"`
	Reply bool `json:"reply,omitempty"`
	PID   int  `json:"pid,omitempty"`
	// HostPID is PID's number in the host PID namespace. Init reads it while
	// the child cannot have been reaped yet: the supervisor could not find
	// it afterwards if the process exited at once.
	HostPID int         `json:"host_pid,omitempty"`
	Error   string      `json:"error,omitempty"`
	Exit    *ExitStatus `json:"exit,omitempty"`
	// Checkpoint is a checkpoint request from inside the job: SIGUSR1
	// sent to init, the job's PID 1.
	Checkpoint bool `json:"checkpoint,omitempty"`
}
