package image

import (
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/xstate"
)

// FormatVersion is the version of the on-disk layout described in this file.
// Bump it whenever a field changes meaning; readers refuse newer versions.
// Version 2 added the manifest's own checksum; version 1 manifests, which
// have none, are still read. Version 3 added incremental generations: page
// runs that refer to an earlier generation's page data (Manifest.Refs) and
// the per-page checksums (PageSumsName) a later generation compares with.
// Version 4 added compressed page files (FileSum.Codec). Version 5 moved
// the page runs out of the core files into page-run files
// (ProcessRef.Runs); a core file of an older version holds them itself.
const FormatVersion = 5

// PageSize is the unit of every page run and of the alignment inside page files.
const PageSize = 4096

// File names inside one generation directory.
const (
	ManifestName = "manifest.json"
)

// CoreName is the per-process state file of the process with sandbox pid pid.
func CoreName(pid int) string { return "core-" + strconv.Itoa(pid) + ".json" }

// PagesName is the per-process page data file of the process with sandbox pid pid.
func PagesName(pid int) string { return "pages-" + strconv.Itoa(pid) + ".img" }

// PageSumsName is the file of per-page checksums of the process with
// sandbox pid pid: one little-endian xxHash64 per page of its page runs,
// in run order, written by incremental checkpoints so that the next one
// can tell which pages changed.
func PageSumsName(pid int) string { return "pagesums-" + strconv.Itoa(pid) + ".img" }

// Manifest is the root of one checkpoint generation. Everything a restart needs
// to decide whether it can proceed is here; process state lives in the core
// files it lists.
type Manifest struct {
	FormatVersion int       `json:"format_version"`
	ToolVersion   string    `json:"tool_version"`
	Generation    int       `json:"generation"`
	Created       time.Time `json:"created"`
	Kernel        string    `json:"kernel"`
	Arch          string    `json:"arch"`
	Host          string    `json:"host"`

	Job        Job                    `json:"job"`
	Processes  []ProcessRef           `json:"processes"`
	Namespaces []specs.LinuxNamespace `json:"namespaces,omitempty"`
	Mounts     []specs.Mount          `json:"mounts,omitempty"`
	Cgroup     *Cgroup                `json:"cgroup,omitempty"`
	Time       *TimeNamespace         `json:"time,omitempty"`
	// IPC is the System V IPC state of the job's IPC namespace; nil when
	// the job had none or shared the host's namespace.
	IPC *SysVIPC `json:"ipc,omitempty"`
	// Network is NetworkPrivate when the job had a network namespace of
	// its own (--net private); its TCP and UDP sockets are restored into
	// a new one. Empty: the node's network.
	Network string `json:"network,omitempty"`
	// Container is the Apptainer container the application ran in; nil
	// for a plain job.
	Container *Container `json:"container,omitempty"`
	// Requires names the kernel features (engine/kernel's names) a
	// restart needs; a node without one refuses before starting anything.
	Requires []string `json:"requires,omitempty"`
	// CPU is the processor the job ran on: a node whose CPU lacks one of
	// its instruction-set extensions is refused.
	CPU *CPU `json:"cpu,omitempty"`
	// LocalFiles are the node-local files the job had open or mapped,
	// saved so that a restart on another node can create them again.
	LocalFiles []LocalFile `json:"local_files,omitempty"`
	// GPU is set when processes of the job used an NVIDIA GPU: a restart
	// puts their device state back, on a node that has the GPUs and a
	// driver that can.
	GPU *GPU `json:"gpu,omitempty"`

	// Files lists every data file of the generation except the manifest
	// itself, with the checksum a restart verifies before starting anything.
	Files []FileSum `json:"files"`

	// Parent is the generation an incremental generation was compared
	// with; 0 for a full one.
	Parent int `json:"parent,omitempty"`
	// Refs are the data files of earlier generations that page runs of
	// this one read (the pages that had not changed), with the size and
	// checksum their own manifests give them. A restart verifies them as
	// its own; a generation whose referenced data is gone or damaged is
	// unusable.
	Refs []FileRef `json:"refs,omitempty"`

	Stats Stats `json:"stats"`

	// ManifestSHA256 is the SHA-256 of the manifest encoded (compact JSON)
	// with this field empty: a manifest changed after it was written is
	// refused.
	ManifestSHA256 string `json:"manifest_sha256,omitempty"`

	// Hooks are the precheckpoint hooks that ran before this generation
	// was taken. Hooks that ran after it (postcheckpoint, prerestore,
	// postrestore) are in the directory's hook log (Store.HookLog).
	Hooks []HookRun `json:"hooks,omitempty"`
}

// NetworkPrivate is Manifest.Network for a job with a network namespace of
// its own.
const NetworkPrivate = "private"

// HookRun is one lifecycle hook that ran.
type HookRun struct {
	Event string   `json:"event"`
	Path  string   `json:"path"`
	Args  []string `json:"args,omitempty"`
	// Source is the hooks file the entry came from.
	Source      string        `json:"source"`
	InContainer bool          `json:"in_container,omitempty"`
	Generation  int           `json:"generation"`
	Start       time.Time     `json:"start"`
	Duration    time.Duration `json:"duration_ns"`
	// ExitCode is -1 when the hook did not exit by itself (timeout,
	// signal, could not start); Error then says why.
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

// Job is what the user asked to run.
type Job struct {
	// MainPID is the pid (in the job's namespace) of the main process,
	// whose exit ends the job; 0 in images that do not say.
	MainPID int      `json:"main_pid,omitempty"`
	Argv    []string `json:"argv"`
	Env     []string `json:"env"`
	Cwd     string   `json:"cwd"`
	UID     int      `json:"uid"`
	GID     int      `json:"gid"`
}

// ProcessRef names one dumped process and its files.
type ProcessRef struct {
	PID   int    `json:"pid"`
	PPID  int    `json:"ppid"`
	Comm  string `json:"comm"`
	Core  string `json:"core"`
	Pages string `json:"pages"`
	// Runs is the page-run file (PageRunsName); empty in images of
	// format 4 and before, whose core files hold the runs.
	Runs string `json:"runs,omitempty"`
}

// Cgroup records the job cgroup the checkpoint was taken in.
type Cgroup struct {
	// Version is "v1", "v2" or "none" (ptrace-only fallback).
	Version   string                `json:"version"`
	Path      string                `json:"path,omitempty"`
	Resources *specs.LinuxResources `json:"resources,omitempty"`
}

// TimeNamespace records the job's clocks so a restart can continue them.
type TimeNamespace struct {
	// MonotonicNs and BoottimeNs are the job's own clock readings (host
	// reading plus the namespace offset) at the moment of the dump.
	MonotonicNs int64 `json:"monotonic_ns"`
	BoottimeNs  int64 `json:"boottime_ns"`
}

// LocalFile is a node-local file (on tmpfs, or written on a local disk)
// the job had open or mapped, saved in the image: a restart on a node that
// does not have it creates it again from Data.
type LocalFile struct {
	// File is the file at checkpoint time; its path is as the job sees it.
	File FileID `json:"file"`
	Data string `json:"data"`
	Mode uint32 `json:"mode"`
	// Where says why it is node-local: "tmpfs", "ramfs" or "local disk".
	Where string `json:"where"`
}

// LocalFileName is the data file holding the nth saved node-local file.
func LocalFileName(n int) string { return "local-" + strconv.Itoa(n) + ".img" }

// CPU is a node's processor as a restart compares it.
type CPU struct {
	Model string `json:"model,omitempty"`
	// Flags are the instruction-set extensions /proc/cpuinfo lists that a
	// program can use (engine's isaFlags), sorted.
	Flags []string `json:"flags"`
	// XState is where this node's CPU lays out the extended register
	// state the threads' XSAVE areas hold, so that a CPU laying it out
	// otherwise can take them.
	XState xstate.Layout `json:"xstate,omitempty"`
	// XFeatures are the register state components (XCR0) every node the
	// job ran on enabled. A program sizes its XSAVE buffers on the node
	// it starts on (glibc's dynamic linker does); a node enabling more
	// would overflow them.
	XFeatures uint64 `json:"xfeatures,omitempty"`
}

// FileSum is the size and xxHash64 checksum of one data file. The checksum
// guards against corruption and truncation, not against tampering (files
// are owner-only); xxHash64 keeps up with memory bandwidth, so checksumming
// never slows a checkpoint or the check before a restart.
type FileSum struct {
	Name  string `json:"name"`
	Size  int64  `json:"size"`
	XXH64 string `json:"xxh64"`
	// Codec is how a page file's data is encoded (CodecZstd), empty for
	// data stored as it is; DataSize is then the size of the data before
	// encoding, in which its page runs' offsets count.
	Codec    string `json:"codec,omitempty"`
	DataSize int64  `json:"data_size,omitempty"`
}

// CodecZstd is a page file compressed in blocks by package pagecodec.
const CodecZstd = "zstd"

// DataLen is the size of the data the file holds, before any encoding: how
// far page runs may reach into it.
func (f FileSum) DataLen() int64 {
	if f.Codec != "" {
		return f.DataSize
	}
	return f.Size
}

// Stats are the figures a user sees after a checkpoint.
type Stats struct {
	Bytes     int64 `json:"bytes"`
	PageBytes int64 `json:"page_bytes"`
	// RefBytes is the page data an incremental generation did not write
	// because it had not changed: its runs read it from earlier
	// generations.
	RefBytes int64 `json:"ref_bytes,omitempty"`
	// CompressedBytes is what PageBytes came to in compressed page files
	// (none: not compressed).
	CompressedBytes int64 `json:"compressed_bytes,omitempty"`
	// PreCopyBytes is the part of PageBytes written while the job ran,
	// before it was stopped.
	PreCopyBytes int64 `json:"precopy_bytes,omitempty"`
	// UnreadBytes is the part of RefBytes the checkpoint did not even
	// read: the kernel's soft-dirty bits said it had not been written.
	UnreadBytes int64 `json:"unread_bytes,omitempty"`
	// WritesArmed says the dump armed write tracking on every process of
	// the job: the next incremental checkpoint on this one may trust it.
	// Not stored.
	WritesArmed bool `json:"-"`
	// MemoryBytes is the memory the checkpoint read from the job: the
	// pages written, those referred to and those found all zero.
	MemoryBytes  int64         `json:"memory_bytes,omitempty"`
	Duration     time.Duration `json:"duration_ns"`
	StoppedFor   time.Duration `json:"stopped_ns"`
	FrozenFor    time.Duration `json:"frozen_ns"`
	Threads      int           `json:"threads"`
	Processes    int           `json:"processes"`
	FreezeMethod string        `json:"freeze_method"`
}
