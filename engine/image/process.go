package image

// Process is the complete state of one dumped process, stored as its core file.
type Process struct {
	PID  int    `json:"pid"`
	PPID int    `json:"ppid"`
	PGID int    `json:"pgid"`
	SID  int    `json:"sid"`
	Comm string `json:"comm"`
	// State is how the process was found: running (any state the job
	// resumes from), stopped by a job-control signal, or a zombie.
	State ProcState `json:"state,omitempty"`
	// ExitStatus is a zombie's wait status (exit code << 8 | signal).
	ExitStatus int `json:"exit_status,omitempty"`
	// PdeathSignal is PR_SET_PDEATHSIG; ChildSubreaper PR_SET_CHILD_SUBREAPER.
	PdeathSignal   int  `json:"pdeath_signal,omitempty"`
	ChildSubreaper bool `json:"child_subreaper,omitempty"`

	Exe   FileID `json:"exe"`
	Cwd   string `json:"cwd"`
	Root  string `json:"root"`
	Umask uint32 `json:"umask"`

	Personality uint32 `json:"personality"`
	Creds       Creds  `json:"creds"`
	MM          MM     `json:"mm"`
	VDSO        VDSO   `json:"vdso"`

	VMAs []VMA `json:"vmas"`
	// PageRuns are kept in the page-run file ProcessRef.Runs names, not
	// in the core file, from format 5 on (see PageRunsName).
	PageRuns []PageRun `json:"page_runs,omitempty"`

	Threads    []Thread    `json:"threads"`
	Files      []FD        `json:"files"`
	Sigactions []Sigaction `json:"sigactions"`
	Rlimits    []Rlimit    `json:"rlimits"`
	Itimers    []Itimer    `json:"itimers"`
	// PosixTimers are the process's timer_create timers.
	PosixTimers []PosixTimer `json:"posix_timers,omitempty"`
}

// ProcState is the run state a process is restored into.
type ProcState string

const (
	ProcRunning ProcState = ""        // runs on after the restore
	ProcStopped ProcState = "stopped" // in a group stop (SIGSTOP, SIGTSTP...)
	ProcZombie  ProcState = "zombie"  // exited, not yet reaped by its parent
)

// FileID identifies a file by path and by what it looked like at dump time, so
// a restart can tell that a library or binary changed underneath the job,
// or that the file at a path is no longer the one the job wrote.
type FileID struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	// Head and Tail are the xxHash64 (hex) of the file's first and last
	// DigestSpan bytes up to Size: device and inode numbers differ on
	// another node, the contents do not. Empty in images that predate them.
	Head string `json:"head,omitempty"`
	Tail string `json:"tail,omitempty"`
}

// DigestSpan is how much of a file's start and end FileID's digests cover.
const DigestSpan = 64 << 10

// Creds are the ids and capability sets of a process. Capabilities are the
// raw 64-bit masks from /proc/pid/status.
type Creds struct {
	UID        [4]int `json:"uid"` // real, effective, saved, fs
	GID        [4]int `json:"gid"`
	CapInh     uint64 `json:"cap_inh"`
	CapPrm     uint64 `json:"cap_prm"`
	CapEff     uint64 `json:"cap_eff"`
	CapBnd     uint64 `json:"cap_bnd"`
	CapAmb     uint64 `json:"cap_amb"`
	NoNewPrivs bool   `json:"no_new_privs"`
}

// MM holds the mm_struct fields restored with prctl(PR_SET_MM_MAP).
type MM struct {
	StartCode  uint64   `json:"start_code"`
	EndCode    uint64   `json:"end_code"`
	StartData  uint64   `json:"start_data"`
	EndData    uint64   `json:"end_data"`
	StartBrk   uint64   `json:"start_brk"`
	Brk        uint64   `json:"brk"`
	StartStack uint64   `json:"start_stack"`
	ArgStart   uint64   `json:"arg_start"`
	ArgEnd     uint64   `json:"arg_end"`
	EnvStart   uint64   `json:"env_start"`
	EnvEnd     uint64   `json:"env_end"`
	Auxv       []uint64 `json:"auxv"`
}

// VDSO records where the kernel's special mappings were and what the vDSO
// code was, so a restore can move the fresh ones into place and refuse a
// different kernel's vDSO.
type VDSO struct {
	SHA256 string `json:"sha256"`
	Size   uint64 `json:"size"`
}

// VMAKind says how a mapping is re-created.
type VMAKind string

const (
	VMAAnon        VMAKind = "anon"         // MAP_PRIVATE|MAP_ANONYMOUS, heap and stack included
	VMAAnonShared  VMAKind = "anon-shared"  // MAP_SHARED of shared memory without a path: anonymous, memfd, deleted file
	VMAFileGone    VMAKind = "file-gone"    // MAP_PRIVATE of a memfd or deleted file: restored as anonymous memory
	VMAFilePrivate VMAKind = "file-private" // MAP_PRIVATE of a file
	VMAFileShared  VMAKind = "file-shared"  // MAP_SHARED of a file
	VMAVDSO        VMAKind = "vdso"         // [vdso]
	VMAVVar        VMAKind = "vvar"         // [vvar]
	VMAVVarVClock  VMAKind = "vvar-vclock"  // [vvar_vclock]
	VMAVsyscall    VMAKind = "vsyscall"     // [vsyscall], fixed by the kernel, never re-created
)

// VMA is one line of /proc/pid/smaps.
type VMA struct {
	Start  uint64  `json:"start"`
	End    uint64  `json:"end"`
	Prot   int     `json:"prot"` // PROT_* bits
	Kind   VMAKind `json:"kind"`
	Offset uint64  `json:"offset"`
	Name   string  `json:"name,omitempty"` // [heap], [stack], path as printed by the kernel
	File   *FileID `json:"file,omitempty"`
	// VmFlags are the two-letter flags of smaps' VmFlags line that a restore
	// re-applies (gd, dc, de, dd, hg, nh, wf, lo).
	VmFlags []string `json:"vm_flags,omitempty"`
	// Shmem identifies the shared memory object (device:inode) behind an
	// anon-shared mapping: mappings with the same Shmem, in any process,
	// are one object, whose pages are stored once.
	Shmem string `json:"shmem,omitempty"`
	// GuardPages are page indexes (relative to Start) that were guard regions
	// installed with MADV_GUARD_INSTALL.
	GuardPages []uint64 `json:"guard_pages,omitempty"`
	// SysVShm is the segment a VMASysVShm mapping shows.
	SysVShm *SysVShmAttach `json:"sysv_shm,omitempty"`
}

// PageRun is a run of consecutive dumped pages. Offset is the page-aligned
// position of the first page in the process's page file. Generation is zero
// for pages stored in this generation; an incremental generation points at
// an earlier generation's page file of the same pid (listed in the
// manifest's Refs) for pages that did not change.
type PageRun struct {
	Addr       uint64 `json:"addr"`
	Pages      uint64 `json:"pages"`
	Offset     uint64 `json:"offset"`
	Generation int    `json:"generation,omitempty"`
}

// Thread is the state of one thread.
type Thread struct {
	TID  int    `json:"tid"`
	Comm string `json:"comm"`
	// Regs is the NT_PRSTATUS register set (struct user_regs_struct).
	Regs Regs `json:"regs"`
	// XState is the raw NT_X86_XSTATE area (FPU, SSE, AVX, AVX-512...).
	XState        []byte    `json:"xstate"`
	SigMask       uint64    `json:"sigmask"`
	AltStack      AltStack  `json:"altstack"`
	Rseq          *Rseq     `json:"rseq,omitempty"`
	RobustList    uint64    `json:"robust_list"`
	RobustListLen uint64    `json:"robust_list_len"`
	ClearChildTID uint64    `json:"clear_child_tid"`
	Pending       []SigInfo `json:"pending,omitempty"`
}

// AltStack is a thread's sigaltstack.
type AltStack struct {
	SP    uint64 `json:"sp"`
	Flags int32  `json:"flags"`
	Size  uint64 `json:"size"`
}

// Rseq is a thread's registered restartable-sequence area.
type Rseq struct {
	Ptr       uint64 `json:"ptr"`
	Size      uint32 `json:"size"`
	Signature uint32 `json:"signature"`
	Flags     uint32 `json:"flags"`
}

// SigInfo is one queued signal, as the raw 128-byte siginfo.
type SigInfo struct {
	Shared bool   `json:"shared"`
	Raw    []byte `json:"raw"`
}

// FDKind says how a file descriptor is re-created.
type FDKind string

const (
	FDFile    FDKind = "file"    // regular file or directory, re-opened by path
	FDDevice  FDKind = "device"  // /dev/null, /dev/zero, /dev/urandom, /dev/random
	FDStdio   FDKind = "stdio"   // the supervisor's own stdin/stdout/stderr (tty or pipe)
	FDEventfd FDKind = "eventfd" // eventfd with its counter
	FDEpoll   FDKind = "epoll"   // epoll instance with its registered fds
	FDPipe    FDKind = "pipe"    // one end of an anonymous pipe
	FDFifo    FDKind = "fifo"    // one end of a named pipe, re-opened by path
	FDUnix    FDKind = "unix"    // AF_UNIX socket
	FDInet    FDKind = "inet"    // IPv4 or IPv6 TCP or UDP socket
	FDPty     FDKind = "pty"     // an end of a pseudo-terminal whose both ends are in the job
)

// FD is one open file descriptor.
type FD struct {
	Num  int    `json:"fd"`
	Kind FDKind `json:"kind"`
	// OFD names the open file description (offset, status flags) across
	// the whole job: descriptors with the same OFD share one, as dup, fork
	// and SCM_RIGHTS leave them. Only the first descriptor of an OFD in
	// the image (by process order, then fd number) carries its state; the
	// others are re-created from it.
	OFD   int     `json:"ofd"`
	Flags int     `json:"flags"` // open flags from fdinfo, O_CLOEXEC included
	Pos   int64   `json:"pos"`
	Path  string  `json:"path,omitempty"`
	File  *FileID `json:"file,omitempty"`
	// Stdio is the supervisor fd (0, 1 or 2) this descriptor was shared with.
	Stdio int `json:"stdio,omitempty"`
	// EventfdCount is the counter of an eventfd.
	EventfdCount uint64 `json:"eventfd_count,omitempty"`
	// EventfdSemaphore is EFD_SEMAPHORE.
	EventfdSemaphore bool `json:"eventfd_semaphore,omitempty"`
	// Epoll lists the registrations of an epoll fd.
	Epoll []EpollEntry `json:"epoll,omitempty"`
	// Pipe describes a pipe or FIFO end.
	Pipe *Pipe `json:"pipe,omitempty"`
	// Unix describes an AF_UNIX socket.
	Unix *UnixSocket `json:"unix,omitempty"`
	// Inet describes a TCP or UDP socket.
	Inet *InetSocket `json:"inet,omitempty"`
	// Pty describes an end of a pseudo-terminal.
	Pty *Pty `json:"pty,omitempty"`
	// Anon describes a timerfd, signalfd or inotify descriptor.
	Anon *AnonFD `json:"anon,omitempty"`
	// Contents describes a memfd or deleted file whose data the image holds.
	Contents *FileContents `json:"contents,omitempty"`
}

// Pipe is one end of a pipe or FIFO. Data is what was buffered in the pipe,
// recorded once per pipe (with the first end in the image).
type Pipe struct {
	// Inode identifies the pipe; both ends share it.
	Inode uint64 `json:"inode"`
	// ReadEnd says which end this descriptor is (FIFOs may be opened
	// read-write: then both are true).
	ReadEnd  bool   `json:"read_end"`
	WriteEnd bool   `json:"write_end"`
	Size     int    `json:"size"` // F_GETPIPE_SZ
	Data     []byte `json:"data,omitempty"`
}

// EpollEntry is one registration on an epoll instance.
type EpollEntry struct {
	FD     int    `json:"tfd"`
	Events uint32 `json:"events"`
	Data   uint64 `json:"data"`
}

// Sigaction is one signal's disposition as struct kernel_sigaction.
type Sigaction struct {
	Signal   int    `json:"sig"`
	Handler  uint64 `json:"handler"`
	Flags    uint64 `json:"flags"`
	Restorer uint64 `json:"restorer"`
	Mask     uint64 `json:"mask"`
}

// Rlimit is one resource limit.
type Rlimit struct {
	Resource int    `json:"resource"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// Itimer is one interval timer (ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF).
type Itimer struct {
	Which       int   `json:"which"`
	IntervalSec int64 `json:"interval_sec"`
	IntervalUs  int64 `json:"interval_usec"`
	ValueSec    int64 `json:"value_sec"`
	ValueUs     int64 `json:"value_usec"`
}
