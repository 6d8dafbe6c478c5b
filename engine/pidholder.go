package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// ErrIDTaken is a restore that found a process or thread id it needs
// taken by another task of the namespace (the sandbox's own init making a
// thread at that moment, say). Nothing of the job ran: the same generation
// can be restored again in a new sandbox.
var ErrIDTaken = errors.New("the id was taken by another task while the restore made the job's tasks")

// pidHolder names the task that holds id nsID in the PID namespace of host
// process inNS, for an error that says why an id could not be given back.
// It returns "" when no such task is found (it may have gone since).
func pidHolder(inNS, nsID int) string {
	want, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", inNS))
	if err != nil {
		return ""
	}
	st, err := proc.ReadStatus(strconv.Itoa(inNS))
	if err != nil {
		return ""
	}
	ids, err := st.Ints("NSpid")
	if err != nil || len(ids) == 0 {
		return ""
	}
	level := len(ids) - 1
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return ""
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		tasks, err := proc.Tasks(pid)
		if err != nil {
			continue
		}
		for _, tid := range tasks {
			path := fmt.Sprintf("%d/task/%d", pid, tid)
			ts, err := proc.ReadStatus(path)
			if err != nil {
				continue
			}
			tids, err := ts.Ints("NSpid")
			if err != nil || len(tids) <= level || tids[level] != nsID {
				continue
			}
			if ns, err := os.Readlink("/proc/" + path + "/ns/pid"); err != nil || (ns != want && len(tids) == level+1) {
				continue
			}
			what := fmt.Sprintf("host task %d (%s, state %s", tid, ts["Name"], ts["State"])
			if tid != pid {
				what += fmt.Sprintf(", a thread of host pid %d", pid)
			}
			return what + ")"
		}
	}
	return ""
}
