package gpu

import (
	"sort"
	"strconv"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// Process is a process of the job that uses an NVIDIA GPU.
type Process struct {
	PID int // host pid
	// Minors are the /dev/nvidiaN devices it has open, by N.
	Minors []int
}

// Find returns the processes among pids that have an NVIDIA device open or
// mapped (/dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidiaN), in pid order.
// A process that exits meanwhile, or whose /proc entries cannot be read,
// is left out: the dump that follows reads the same entries and says what
// stands in its way.
func Find(pids []int) []Process {
	var out []Process
	for _, pid := range pids {
		if p, ok, err := inspect(pid); err == nil && ok {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// inspect reads one process's descriptors and mappings.
func inspect(pid int) (Process, bool, error) {
	p := Process{PID: pid}
	uses := false
	seen := map[int]bool{}
	note := func(path string) {
		if !strings.HasPrefix(path, "/dev/nvidia") {
			return
		}
		uses = true
		if n, ok := deviceMinor(path); ok && !seen[n] {
			seen[n] = true
			p.Minors = append(p.Minors, n)
		}
	}
	fds, err := proc.ReadFDLinks(pid)
	if err != nil {
		return p, false, err
	}
	for _, fd := range fds {
		note(fd.Target)
	}
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		return p, false, err
	}
	for _, m := range maps {
		note(strings.TrimSuffix(m.Path, " (deleted)"))
	}
	sort.Ints(p.Minors)
	return p, uses, nil
}

// deviceMinor is N of /dev/nvidiaN; the control and UVM devices have none.
func deviceMinor(path string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(path, "/dev/nvidia"))
	return n, err == nil && n >= 0
}
