package namespaces

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// nsFiles maps the runtime-spec namespace types to their /proc/pid/ns names,
// in the order the runtime spec lists them.
var nsFiles = []struct {
	typ  specs.LinuxNamespaceType
	file string
}{
	{specs.PIDNamespace, "pid"},
	{specs.NetworkNamespace, "net"},
	{specs.MountNamespace, "mnt"},
	{specs.IPCNamespace, "ipc"},
	{specs.UTSNamespace, "uts"},
	{specs.UserNamespace, "user"},
	{specs.CgroupNamespace, "cgroup"},
	{specs.TimeNamespace, "time"},
}

// Namespaces returns the namespaces of process pid as runtime-spec entries
// whose paths are /proc/<pid>/ns/<name>. Kinds the kernel does not have are
// left out.
func Namespaces(pid int) ([]specs.LinuxNamespace, error) {
	var out []specs.LinuxNamespace
	for _, n := range nsFiles {
		path := fmt.Sprintf("/proc/%d/ns/%s", pid, n.file)
		if _, err := os.Readlink(path); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				if _, perr := os.Stat(fmt.Sprintf("/proc/%d", pid)); perr != nil {
					return nil, fmt.Errorf("namespaces of pid %d: %w", pid, perr)
				}
				continue
			}
			return nil, fmt.Errorf("namespaces of pid %d: %w", pid, err)
		}
		out = append(out, specs.LinuxNamespace{Type: n.typ, Path: path})
	}
	return out, nil
}

// Own reports whether process pid has a namespace of kind typ of its own,
// one the caller is not in. A restart asks it of the new sandbox's init
// before it restores state that only a private namespace can hold (System V
// IPC objects with their original ids).
func Own(pid int, typ specs.LinuxNamespaceType) (bool, error) {
	for _, n := range nsFiles {
		if n.typ != typ {
			continue
		}
		theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, n.file))
		if err != nil {
			return false, fmt.Errorf("%s namespace of pid %d: %w", typ, pid, err)
		}
		ours, err := os.Readlink("/proc/self/ns/" + n.file)
		if err != nil {
			return false, fmt.Errorf("own %s namespace: %w", typ, err)
		}
		return theirs != ours, nil
	}
	return false, fmt.Errorf("unknown namespace kind %q", typ)
}

// Mounts returns the mount table of process pid as runtime-spec mounts, in
// mountinfo order. Options are the per-mount options followed by the
// filesystem's own (super block) options not already given. A mount of part
// of a filesystem (a bind mount) carries its root inside that filesystem as
// an extra "root=<path>" option, since runtime-spec Mount has no field for it.
func Mounts(pid int) ([]specs.Mount, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, fmt.Errorf("mounts of pid %d: %w", pid, err)
	}
	defer f.Close()
	infos, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("mounts of pid %d: %w", pid, err)
	}
	out := make([]specs.Mount, 0, len(infos))
	for _, mi := range infos {
		out = append(out, specMount(mi))
	}
	return out, nil
}

// specMount converts one mountinfo entry.
func specMount(mi *mountinfo.Info) specs.Mount {
	var opts []string
	seen := map[string]bool{}
	add := func(list string) {
		for _, o := range strings.Split(list, ",") {
			if o != "" && !seen[o] {
				seen[o] = true
				opts = append(opts, o)
			}
		}
	}
	add(mi.Options)
	add(mi.VFSOptions)
	if mi.Root != "/" && mi.Root != "" {
		opts = append(opts, "root="+mi.Root)
	}
	return specs.Mount{
		Destination: mi.Mountpoint,
		Type:        mi.FSType,
		Source:      mi.Source,
		Options:     opts,
	}
}

// JobClocks returns the CLOCK_MONOTONIC and CLOCK_BOOTTIME that process
// hostPID sees now: the caller's clocks plus the offsets of the time
// namespace hostPID's children are created in (for a job process, its own).
// The caller must be in the host's time namespace, as the supervisor is.
func JobClocks(hostPID int) (monotonic, boottime time.Duration, err error) {
	path := fmt.Sprintf("/proc/%d/timens_offsets", hostPID)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("job clocks: %w", err)
	}
	monoOff, bootOff, err := parseTimensOffsets(b)
	if err != nil {
		return 0, 0, fmt.Errorf("job clocks: %s: %w", path, err)
	}
	var mono, boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return 0, 0, fmt.Errorf("job clocks: read CLOCK_MONOTONIC: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return 0, 0, fmt.Errorf("job clocks: read CLOCK_BOOTTIME: %w", err)
	}
	return time.Duration(mono.Nano()) + monoOff, time.Duration(boot.Nano()) + bootOff, nil
}

// parseTimensOffsets reads the "<clock> <sec> <nsec>" lines of
// timens_offsets. The kernel names clocks "monotonic" and "boottime"; the
// numeric ids are accepted too.
func parseTimensOffsets(b []byte) (monotonic, boottime time.Duration, err error) {
	var haveMono, haveBoot bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return 0, 0, fmt.Errorf("malformed line %q", sc.Text())
		}
		sec, err1 := strconv.ParseInt(f[1], 10, 64)
		nsec, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("malformed line %q", sc.Text())
		}
		d := time.Duration(sec)*time.Second + time.Duration(nsec)
		switch f[0] {
		case "monotonic", strconv.Itoa(unix.CLOCK_MONOTONIC):
			monotonic, haveMono = d, true
		case "boottime", strconv.Itoa(unix.CLOCK_BOOTTIME):
			boottime, haveBoot = d, true
		default:
			return 0, 0, fmt.Errorf("unknown clock %q", f[0])
		}
	}
	if !haveMono || !haveBoot {
		return 0, 0, errors.New("monotonic or boottime offset missing")
	}
	return monotonic, boottime, nil
}
