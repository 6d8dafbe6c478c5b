package kernel

import (
	"fmt"
	"sort"
	"strings"
)

// Feature names a kernel feature; the names are what `check` prints and
// CKPT_APPTAINER_DISABLE takes.
type Feature string

// The features the tool probes for.
const (
	CloseRangeCloexec    Feature = "close-range-cloexec"
	TimeNamespace        Feature = "time-namespace"
	TimeNamespaceVfork   Feature = "time-namespace-vfork"
	Clone3               Feature = "clone3"
	Clone3SetTID         Feature = "clone3-set-tid"
	NSLastPID            Feature = "ns-last-pid"
	PidfdOpen            Feature = "pidfd-open"
	PidfdGetfd           Feature = "pidfd-getfd"
	SetnsPidfd           Feature = "setns-pidfd"
	ClonePidfd           Feature = "clone-pidfd"
	Rseq                 Feature = "rseq"
	PtraceRseq           Feature = "ptrace-rseq"
	PtraceSyscallInfo    Feature = "ptrace-syscall-info"
	CgroupV2Freezer      Feature = "cgroup-v2-freezer"
	CgroupV1Freezer      Feature = "cgroup-v1-freezer"
	CapCheckpointRestore Feature = "cap-checkpoint-restore"
	TimerRestoreIDs      Feature = "timer-restore-ids"
	MemfdExec            Feature = "memfd-exec"
	SoftDirty            Feature = "soft-dirty"
	PagemapScan          Feature = "pagemap-scan"
	Userfaultfd          Feature = "userfaultfd"
	UserfaultfdWPAsync   Feature = "userfaultfd-wp-async"
)

// Info describes a feature for people: what it is, the mainline version
// that brought it, and what the tool does on a kernel without it.
type Info struct {
	Name Feature `json:"name"`
	// What the feature is.
	What string `json:"what"`
	// Since is the mainline kernel that brought it; enterprise kernels
	// may have it earlier.
	Since string `json:"since"`
	// Without is what the tool does on a kernel that lacks it.
	Without string `json:"without"`
	// Degrades says the user loses something without it (a clock that
	// jumps, a kind of job refused); otherwise the fallback costs nothing
	// the job can see.
	Degrades bool `json:"degrades"`
	// RHEL8 says mainline 4.18 lacks it (CKPT_APPTAINER_DISABLE=rhel8).
	RHEL8 bool `json:"-"`
}

// infos lists every feature, in the order check prints them.
var infos = []Info{
	{Name: CloseRangeCloexec, What: "close_range(CLOSE_RANGE_CLOEXEC)", Since: "5.11", RHEL8: true,
		Without: "the sandbox init marks inherited descriptors close-on-exec one by one from /proc/self/fd"},
	{Name: TimeNamespace, What: "time namespaces", Since: "5.6", RHEL8: true, Degrades: true,
		Without: "no time namespace: the job's CLOCK_MONOTONIC and CLOCK_BOOTTIME jump across restarts"},
	{Name: TimeNamespaceVfork, What: "a vfork child entering a new time namespace", Since: "6.3", RHEL8: true,
		Without: "job processes join the time namespace with setns, through a small program run before the job's command"},
	{Name: Clone3, What: "the clone3 system call", Since: "5.3", RHEL8: true,
		Without: "restored processes and threads are created with clone"},
	{Name: Clone3SetTID, What: "clone3 with set_tid", Since: "5.5", RHEL8: true,
		Without: "restored processes and threads get their PIDs through /proc/sys/kernel/ns_last_pid"},
	{Name: NSLastPID, What: "/proc/sys/kernel/ns_last_pid (CONFIG_CHECKPOINT_RESTORE)", Since: "3.3", Degrades: true,
		Without: "restored processes get their PIDs from clone3 set_tid alone; without both a restart cannot give them their PIDs"},
	{Name: PidfdOpen, What: "pidfd_open", Since: "5.3", RHEL8: true,
		Without: "processes are named by PID, and namespaces joined through /proc/PID/ns"},
	{Name: PidfdGetfd, What: "pidfd_getfd", Since: "5.6", RHEL8: true,
		Without: "descriptors are copied out of a stopped process by making it send them over a unix socket (SCM_RIGHTS)"},
	{Name: SetnsPidfd, What: "setns on a pidfd", Since: "5.8", RHEL8: true,
		Without: "namespaces are joined one at a time through /proc/PID/ns"},
	{Name: ClonePidfd, What: "clone(CLONE_PIDFD)", Since: "5.2", RHEL8: true,
		Without: "the sandbox init finds a child's host PID through /proc/PID/task/TID/children"},
	{Name: Rseq, What: "the rseq system call", Since: "4.18", Degrades: true,
		Without: "a thread that had registered a restartable-sequence area cannot be restored"},
	{Name: PtraceRseq, What: "PTRACE_GET_RSEQ_CONFIGURATION", Since: "5.13", RHEL8: true,
		Without: "a thread's rseq area is found through glibc's __rseq_offset; jobs launched here run with glibc's rseq off (GLIBC_TUNABLES=glibc.pthread.rseq=0)"},
	{Name: PtraceSyscallInfo, What: "PTRACE_GET_SYSCALL_INFO", Since: "5.3", RHEL8: true,
		Without: "system call entry and exit stops are told apart by RAX, which holds -ENOSYS at entry"},
	{Name: CgroupV2Freezer, What: "the cgroup v2 freezer (cgroup.freeze)", Since: "5.2", RHEL8: true,
		Without: "a cgroup v2 job cgroup still holds the job, and checkpoints stop it with ptrace alone"},
	{Name: CgroupV1Freezer, What: "a mounted cgroup v1 freezer hierarchy", Since: "2.6.28",
		Without: "without a cgroup v2 freezer either, checkpoints stop the job with ptrace alone"},
	{Name: CapCheckpointRestore, What: "CAP_CHECKPOINT_RESTORE", Since: "5.9", RHEL8: true,
		Without: "the sandbox uses CAP_SYS_ADMIN in the job's user namespace for what it covers"},
	{Name: TimerRestoreIDs, What: "prctl(PR_TIMER_CREATE_RESTORE_IDS)", Since: "6.15", RHEL8: true,
		Without: "POSIX timers are re-created in id order, with placeholder timers made and deleted for the ids in between"},
	{Name: MemfdExec, What: "memfd_create(MFD_EXEC)", Since: "6.3", RHEL8: true,
		Without: "generated programs run from memfds made without the flag, which are executable on such kernels"},
	{Name: SoftDirty, What: "soft-dirty page tracking (CONFIG_MEM_SOFT_DIRTY)", Since: "3.11",
		Without: "incremental checkpoints and pre-copies find the pages written since the last checkpoint by userfaultfd write-protection where the kernel has it, else read and compare all of the job's memory"},
	{Name: PagemapScan, What: "the PAGEMAP_SCAN ioctl", Since: "6.7", RHEL8: true,
		Without: "not used by this version"},
	{Name: Userfaultfd, What: "userfaultfd for an unprivileged user", Since: "4.3",
		Without: "not used by this version"},
	{Name: UserfaultfdWPAsync, What: "userfaultfd asynchronous write-protect (UFFD_FEATURE_WP_ASYNC)", Since: "6.7", RHEL8: true,
		Without: "without soft-dirty bits either, an incremental checkpoint reads and compares all of the job's memory to find the pages that changed"},
}

// Infos returns the description of every feature, in check's order.
func Infos() []Info { return append([]Info(nil), infos...) }

// Describe returns the description of f.
func Describe(f Feature) Info {
	for _, i := range infos {
		if i.Name == f {
			return i
		}
	}
	return Info{Name: f, What: string(f)}
}

// known reports whether f is a feature name.
func known(f Feature) bool {
	for _, i := range infos {
		if i.Name == f {
			return true
		}
	}
	return false
}

// EnvDisable names the environment variable that switches features off.
const EnvDisable = "CKPT_APPTAINER_DISABLE"

// rhel8Word in CKPT_APPTAINER_DISABLE stands for every feature mainline
// 4.18 lacks.
const rhel8Word = "rhel8"

// ParseDisable reads a CKPT_APPTAINER_DISABLE value: feature names and the
// word rhel8, separated by commas. An unknown name is an error that lists
// the known ones.
func ParseDisable(value string) (map[Feature]bool, error) {
	out := map[Feature]bool{}
	var unknown []string
	for _, w := range strings.Split(value, ",") {
		w = strings.TrimSpace(w)
		switch {
		case w == "":
		case w == rhel8Word:
			for _, i := range infos {
				if i.RHEL8 {
					out[i.Name] = true
				}
			}
		case known(Feature(w)):
			out[Feature(w)] = true
		default:
			unknown = append(unknown, w)
		}
	}
	if len(unknown) > 0 {
		names := make([]string, 0, len(infos)+1)
		for _, i := range infos {
			names = append(names, string(i.Name))
		}
		sort.Strings(names)
		names = append(names, rhel8Word)
		return nil, fmt.Errorf("$%s: unknown feature %s (known: %s)", EnvDisable,
			strings.Join(unknown, ", "), strings.Join(names, ", "))
	}
	return out, nil
}
