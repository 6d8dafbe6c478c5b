package main

import "github.com/ckpt-apptainer/ckpt-apptainer/engine/image"

// inspectReport is what `ckpt-apptainer inspect` shows of one generation.
// The text output is printed from it and `inspect --json` encodes it, so
// the two never disagree. Keys are snake_case, as in `list --json`; the
// manifest is included as the image stores it.
type inspectReport struct {
	Generation int    `json:"generation"`
	Dir        string `json:"dir"`
	// Valid says whether the generation's files verified; Error says why
	// not.
	Valid    bool            `json:"valid"`
	Error    string          `json:"error,omitempty"`
	Manifest *image.Manifest `json:"manifest"`
	// Processes follow the manifest's process order.
	Processes []inspectProcess `json:"processes"`
	// MemoryTotal and FDsByKind add up every process whose core file
	// could be read.
	MemoryTotal memoryUsage          `json:"memory_total"`
	FDsByKind   map[image.FDKind]int `json:"fds_by_kind"`
	// Hooks are the precheckpoint hooks of the manifest followed by the
	// hook log's entries for this generation (postcheckpoint,
	// prerestore, postrestore), oldest first.
	Hooks []image.HookRun `json:"hooks"`
	// References are the files the job had open or mapped that the image
	// does not hold (the manifest's local_files are those it does): a
	// restart opens them where they are, after checking they are the same.
	References []string `json:"references"`
	// Unreadable lists the files the report is missing: core files and
	// the hook log that could not be read or decoded.
	Unreadable []unreadableFile `json:"unreadable,omitempty"`
}

// unreadableFile is one file inspect could not read.
type unreadableFile struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// inspectProcess is one process of the generation. PID, PPID and Comm
// come from the manifest and are always set; the rest comes from the core
// file, and is zero when Error says the core file could not be read.
type inspectProcess struct {
	PID  int    `json:"pid"`
	PPID int    `json:"ppid"`
	PGID int    `json:"pgid"`
	SID  int    `json:"sid"`
	Comm string `json:"comm"`
	Exe  string `json:"exe"`
	// State is "running", "stopped" or "zombie"; ExitStatus is a
	// zombie's wait status.
	State      string `json:"state"`
	ExitStatus int    `json:"exit_status,omitempty"`
	// Core is the process's core file in the generation.
	Core      string               `json:"core"`
	Error     string               `json:"error,omitempty"`
	Threads   []inspectThread      `json:"threads"`
	Memory    memoryUsage          `json:"memory"`
	FDs       []inspectFD          `json:"fds"`
	FDsByKind map[image.FDKind]int `json:"fds_by_kind"`
}

// inspectThread is one thread of a process.
type inspectThread struct {
	TID  int    `json:"tid"`
	Comm string `json:"comm"`
	// SigMask is the blocked signal mask (bit n-1 for signal n); Blocked
	// names its signals.
	SigMask uint64   `json:"sigmask"`
	Blocked []string `json:"blocked,omitempty"`
	// PendingSignals counts the signals queued for the thread; those
	// queued for the whole process are counted on its main thread.
	PendingSignals int `json:"pending_signals,omitempty"`
	// AltStackSize is the size of an enabled sigaltstack.
	AltStackSize uint64 `json:"altstack_size,omitempty"`
	// Rseq says whether a restartable-sequence area is registered.
	Rseq bool `json:"rseq,omitempty"`
}

// memoryFigures are the mappings of one kind, or of all kinds: how many,
// how much address space they cover and how many bytes of their pages the
// image stores.
type memoryFigures struct {
	Mappings  int   `json:"mappings"`
	Bytes     int64 `json:"bytes"`
	PageBytes int64 `json:"page_bytes"`
}

// add adds o to f.
func (f *memoryFigures) add(o memoryFigures) {
	f.Mappings += o.Mappings
	f.Bytes += o.Bytes
	f.PageBytes += o.PageBytes
}

// memoryUsage is the memory of a process or of the job: the totals, and
// the figures by kind of mapping. Pages the image holds outside any
// recorded mapping are counted under the kind "unmapped".
type memoryUsage struct {
	memoryFigures
	ByKind map[image.VMAKind]memoryFigures `json:"by_kind"`
}

// add adds the figures of kind k to u.
func (u *memoryUsage) add(k image.VMAKind, f memoryFigures) {
	if u.ByKind == nil {
		u.ByKind = map[image.VMAKind]memoryFigures{}
	}
	byKind := u.ByKind[k]
	byKind.add(f)
	u.ByKind[k] = byKind
	u.memoryFigures.add(f)
}

// vmaUnmapped is the kind under which memoryUsage counts stored pages
// that lie in no recorded mapping (an image the engine never writes).
const vmaUnmapped image.VMAKind = "unmapped"

// inspectFD is one file descriptor of a process. Path is the file's path
// for files, FIFOs and devices, the memfd's name or the deleted file's
// path for those; Detail says in a few words what the descriptor holds
// for the other kinds.
type inspectFD struct {
	FD     int          `json:"fd"`
	Kind   image.FDKind `json:"kind"`
	Path   string       `json:"path,omitempty"`
	Pos    int64        `json:"pos"`
	Flags  int          `json:"flags"`
	Detail string       `json:"detail,omitempty"`
}
