package hooks

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// nsKinds are the namespaces a container hook enters when the target's
// differs from the caller's, as /proc/PID/ns names them, with the nsenter
// option for each. User comes first only for readability: nsenter itself
// orders the joins so that an unprivileged owner of the user namespace
// gets in.
var nsKinds = []struct{ name, option string }{
	{"user", "--user"},
	{"mnt", "--mount"},
	{"pid", "--pid"},
	{"ipc", "--ipc"},
	{"uts", "--uts"},
	{"net", "--net"},
	{"cgroup", "--cgroup"},
	{"time", "--time"},
}

// containerCommand returns the command that runs h inside the namespaces,
// root and working directory of process pid, with nsenter (util-linux,
// looked up in PATH). nsenter execs Path with Args[1:]: args[0] is not
// passed.
//
// Only the namespaces in which pid differs from the caller are joined:
// joining one the caller already shares needs privilege over it that an
// unprivileged caller lacks (the host's UTS namespace, say). The hook keeps
// the caller's credentials (--preserve-credentials): the job's user
// namespaces map the caller's uid to itself.
//
// An unprivileged caller can join a namespace only from inside a user
// namespace that has power over it, and loses that power over a user
// namespace's ancestors once it enters it. When pid's user namespace is a
// child of the caller's (the job sandbox), one nsenter joins it first and
// the rest after. When it is nested deeper (Apptainer's user namespace
// inside the sandbox's), a first nsenter joins the outermost user namespace
// below the caller's, and there every namespace but the mount namespace
// (whichever user namespace owns them); it runs a second nsenter, still
// seeing the host's files and /proc, that joins pid's own user namespace,
// then its mount namespace, root and working directory.
func containerCommand(h Hook, pid int) (*exec.Cmd, error) {
	if pid <= 0 {
		return nil, errors.New("container hook: no job process runs to enter")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("container hook: needs nsenter (util-linux) in PATH: %w", err)
	}
	join := map[string]bool{}
	for _, k := range nsKinds {
		if join[k.name], err = nsDiffers(k.name, pid); err != nil {
			return nil, fmt.Errorf("container hook: %w", err)
		}
	}
	target := strconv.Itoa(pid)
	hook := append([]string{"--wd", "--", h.Path}, h.Args[min(1, len(h.Args)):]...)
	all := func(string) bool { return true }

	if !join["user"] {
		// The caller is privileged over the target's namespaces (or
		// there are none to join), and has the target's root already
		// unless the mount namespace differs.
		args := append([]string{"nsenter", "--target", target}, nsOptions(join, all)...)
		if join["mnt"] {
			args = append(args, "--root")
		}
		return &exec.Cmd{Path: nsenter, Args: append(args, hook...)}, nil
	}
	outer, err := outerUserNS(pid)
	if err != nil {
		return nil, fmt.Errorf("container hook: %w", err)
	}
	if outer == "" {
		args := append([]string{"nsenter", "--target", target}, nsOptions(join, all)...)
		args = append(args, "--preserve-credentials", "--root")
		return &exec.Cmd{Path: nsenter, Args: append(args, hook...)}, nil
	}
	inner := func(name string) bool { return name == "user" || name == "mnt" }
	args := []string{"nsenter", "--target", target, "--user=" + outer, "--preserve-credentials"}
	args = append(args, nsOptions(join, func(name string) bool { return !inner(name) })...)
	args = append(args, "--", nsenter, "--target", target)
	args = append(args, nsOptions(join, inner)...)
	args = append(args, "--preserve-credentials", "--root")
	return &exec.Cmd{Path: nsenter, Args: append(args, hook...)}, nil
}

// nsOptions returns the nsenter options of the namespaces to join that
// pick accepts, in nsKinds order.
func nsOptions(join map[string]bool, pick func(name string) bool) []string {
	var opts []string
	for _, k := range nsKinds {
		if join[k.name] && pick(k.name) {
			opts = append(opts, k.option)
		}
	}
	return opts
}

// outerUserNS returns "" when process pid's user namespace is a child of
// the caller's. When it is nested deeper, it returns the path
// (/proc/P/ns/user) of the user namespace on its chain that is a child of
// the caller's, naming it by P, the nearest ancestor process of pid in it
// (for a container job, the job sandbox's init or Apptainer's starter).
func outerUserNS(pid int) (string, error) {
	self, err := nsIno("/proc/self/ns/user")
	if err != nil {
		return "", err
	}
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("user namespace of process %d: %w", pid, err)
	}
	var chain []uint64 // from pid's user namespace up
	for {
		var st unix.Stat_t
		err := unix.Fstat(fd, &st)
		parent := -1
		if err == nil {
			chain = append(chain, st.Ino)
			parent, err = unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		}
		unix.Close(fd)
		if err != nil {
			return "", fmt.Errorf("user namespace of process %d is not below the caller's: %w", pid, err)
		}
		var pst unix.Stat_t
		err = unix.Fstat(parent, &pst)
		if err == nil && pst.Ino == self {
			unix.Close(parent)
			break
		}
		if err != nil || len(chain) > 32 {
			unix.Close(parent)
			return "", fmt.Errorf("user namespace of process %d is not below the caller's", pid)
		}
		fd = parent
	}
	if len(chain) == 1 {
		return "", nil
	}
	want := fmt.Sprintf("user:[%d]", chain[len(chain)-1])
	for p, steps := pid, 0; p > 1 && steps < 4096; steps++ {
		if link, _ := os.Readlink("/proc/" + strconv.Itoa(p) + "/ns/user"); link == want {
			return "/proc/" + strconv.Itoa(p) + "/ns/user", nil
		}
		if p, err = ppid(p); err != nil {
			break
		}
	}
	return "", fmt.Errorf("user namespace of process %d is nested in %s, and no ancestor of it runs there to join it by", pid, want)
}

// nsIno returns the inode number of the namespace file at path.
func nsIno(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// ppid returns the parent pid of process pid.
func ppid(pid int) (int, error) {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("process %d: no PPid in its status", pid)
}

// nsDiffers reports whether process pid is in another namespace of kind
// name than the caller. A kind the kernel does not have (no
// /proc/self/ns/time on an old kernel) differs nowhere.
func nsDiffers(name string, pid int) (bool, error) {
	self, err := os.Readlink("/proc/self/ns/" + name)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/" + name)
	if err != nil {
		return false, fmt.Errorf("namespaces of process %d: %w", pid, err)
	}
	return self != target, nil
}
