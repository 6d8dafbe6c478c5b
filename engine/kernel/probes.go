package kernel

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// probes maps each feature to its probe, which says whether the kernel has
// it and, if not, what it saw. A probe may read the features probed before
// it from s (Infos' order).
var probes = map[Feature]func(s *Set) (bool, string){
	CloseRangeCloexec: func(*Set) (bool, string) {
		// A range with no open descriptor: the flag is checked all the
		// same, and nothing changes.
		if err := unix.CloseRange(1<<30, 1<<30, unix.CLOSE_RANGE_CLOEXEC); err != nil {
			return false, errnoDetail("close_range", err)
		}
		return true, ""
	},
	TimeNamespace: func(*Set) (bool, string) {
		return exists("/proc/self/ns/time")
	},
	TimeNamespaceVfork: func(s *Set) (bool, string) {
		if !s.Has(TimeNamespace) {
			return false, "no time namespaces"
		}
		return probeTimensVfork()
	},
	Clone3:       func(*Set) (bool, string) { return probeClone3() },
	Clone3SetTID: func(*Set) (bool, string) { return probeClone3SetTID() },
	NSLastPID: func(*Set) (bool, string) {
		return exists("/proc/sys/kernel/ns_last_pid")
	},
	PidfdOpen: func(*Set) (bool, string) {
		fd, err := unix.PidfdOpen(os.Getpid(), 0)
		if err != nil {
			return false, errnoDetail("pidfd_open", err)
		}
		unix.Close(fd)
		return true, ""
	},
	PidfdGetfd: func(s *Set) (bool, string) {
		return withPidfd(s, func(pidfd int) (bool, string) {
			fd, err := unix.PidfdGetfd(pidfd, pidfd, 0)
			if err != nil {
				return false, errnoDetail("pidfd_getfd", err)
			}
			unix.Close(fd)
			return true, ""
		})
	},
	SetnsPidfd: func(s *Set) (bool, string) {
		return withPidfd(s, func(pidfd int) (bool, string) {
			// Joining our own UTS namespace changes nothing. Kernels
			// that take pidfds check the capability (EPERM for
			// a user); older ones refuse the descriptor (EINVAL).
			err := unix.Setns(pidfd, unix.CLONE_NEWUTS)
			if err == nil || errors.Is(err, unix.EPERM) {
				return true, ""
			}
			return false, errnoDetail("setns on a pidfd", err)
		})
	},
	ClonePidfd: func(*Set) (bool, string) { return probeClonePidfd() },
	Rseq:       func(*Set) (bool, string) { return probeRseq() },
	PtraceRseq: func(*Set) (bool, string) {
		return probePtrace(reqGetRseqConfiguration, "PTRACE_GET_RSEQ_CONFIGURATION")
	},
	PtraceSyscallInfo: func(*Set) (bool, string) {
		return probePtrace(unix.PTRACE_GET_SYSCALL_INFO, "PTRACE_GET_SYSCALL_INFO")
	},
	CgroupV2Freezer: func(*Set) (bool, string) { return probeCgroupV2Freezer() },
	CgroupV1Freezer: func(*Set) (bool, string) {
		ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup"))
		if err != nil {
			return false, "read mountinfo: " + err.Error()
		}
		for _, m := range ms {
			for _, o := range strings.Split(m.VFSOptions, ",") {
				if o == "freezer" {
					return true, ""
				}
			}
		}
		return false, "no cgroup v1 hierarchy with the freezer controller is mounted"
	},
	CapCheckpointRestore: func(s *Set) (bool, string) {
		if s.LastCap < unix.CAP_CHECKPOINT_RESTORE {
			return false, "cap_last_cap is " + strconv.Itoa(s.LastCap)
		}
		return true, ""
	},
	TimerRestoreIDs: func(*Set) (bool, string) {
		// PR_TIMER_CREATE_RESTORE_IDS_GET: a query that changes nothing.
		if _, err := unix.PrctlRetInt(prTimerCreateRestoreIDs, prTimerCreateRestoreIDsGet, 0, 0, 0); err != nil {
			return false, errnoDetail("prctl(PR_TIMER_CREATE_RESTORE_IDS)", err)
		}
		return true, ""
	},
	MemfdExec: func(*Set) (bool, string) {
		fd, err := unix.MemfdCreate("ckpt-probe", unix.MFD_CLOEXEC|unix.MFD_EXEC)
		if err != nil {
			return false, errnoDetail("memfd_create(MFD_EXEC)", err)
		}
		unix.Close(fd)
		return true, ""
	},
	SoftDirty:          func(*Set) (bool, string) { return probeSoftDirty() },
	PagemapScan:        func(*Set) (bool, string) { return probePagemapScan() },
	Userfaultfd:        func(*Set) (bool, string) { return probeUserfaultfd(false) },
	UserfaultfdWPAsync: func(*Set) (bool, string) { return probeUserfaultfd(true) },
}

// exists probes a feature that shows as a file.
func exists(path string) (bool, string) {
	if _, err := os.Stat(path); err != nil {
		return false, "no " + path
	}
	return true, ""
}

// withPidfd runs probe with a pidfd of this process, when there are pidfds.
func withPidfd(s *Set, probe func(pidfd int) (bool, string)) (bool, string) {
	if !s.Has(PidfdOpen) {
		return false, "no pidfd_open"
	}
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false, errnoDetail("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	return probe(pidfd)
}

// probeCgroupV2Freezer looks for cgroup.freeze, which every non-root cgroup
// v2 directory of a kernel with the freezer has: in the caller's own cgroup,
// or, when that is the root, in a child of it.
func probeCgroupV2Freezer() (bool, string) {
	ms, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup2"))
	if err != nil {
		return false, "read mountinfo: " + err.Error()
	}
	if len(ms) == 0 {
		return false, "no cgroup v2 hierarchy is mounted"
	}
	own := ownV2Cgroup()
	for _, m := range ms {
		dir := filepath.Join(m.Mountpoint, strings.TrimPrefix(own, m.Root))
		if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err == nil {
			return true, ""
		}
		ents, _ := os.ReadDir(m.Mountpoint)
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(m.Mountpoint, e.Name(), "cgroup.freeze")); e.IsDir() && err == nil {
				return true, ""
			}
		}
	}
	return false, "no cgroup.freeze in the cgroup v2 hierarchy"
}

// ownV2Cgroup is the caller's cgroup v2 path ("0::PATH" in /proc/self/cgroup).
func ownV2Cgroup() string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p
		}
	}
	return "/"
}
