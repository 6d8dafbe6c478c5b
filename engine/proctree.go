package engine

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// initPID is the sandbox init's pid in the job's PID namespace: the parent
// of the job's main process and of its orphans, and the leader of the
// session and process group the job starts in.
const initPID = 1

// createTree creates every process as a stub with its pid, parent, session
// and process group, then lets the zombies exit.
//
// A process whose parent is init is spawned by the sandbox, any other is
// cloned by its parent's stub (clone3 with set_tid, or after the pid writer
// set the counter), so parents come first.
// The session is inherited from the creator or started with setsid; one
// that is neither (a process whose parent has since moved to another
// session) is cloned with CLONE_PARENT from a sibling in that session.
func (jr *jobRestore) createTree() error {
	main := jr.main()
	jr.outer = main.proc.PPID
	if main.proc.PPID != initPID && jr.opts.Container == nil {
		return fmt.Errorf("the image has no process whose parent is the sandbox init")
	}
	order := []*restorer{main}
	for _, r := range jr.procs {
		if r != main && r.proc.PPID == jr.outer {
			if jr.opts.Container != nil {
				return fmt.Errorf("restore pid %d: its parent is the container runtime, as is the main process's (pid %d): not supported", r.proc.PID, main.proc.PID)
			}
		}
		if r != main && !(r.proc.State == image.ProcZombie && r.proc.PPID == jr.outer) {
			// A zombie child of init would be reaped by init at once;
			// it is left out.
			order = append(order, r)
		}
	}
	var created []*restorer
	for _, r := range order {
		if err := jr.create(r, created); err != nil {
			return fmt.Errorf("restore pid %d: %w", r.proc.PID, err)
		}
		created = append(created, r)
		if r == main && jr.needPIDWriter() {
			// After the main process: the sandbox takes the first
			// process it starts for the job's main one.
			if err := jr.startPIDWriter(); err != nil {
				return err
			}
		}
	}
	jr.procs = created
	if err := jr.setProcessGroups(); err != nil {
		return err
	}
	for _, r := range created {
		if r.proc.State == image.ProcZombie {
			if err := r.exitAsZombie(); err != nil {
				return fmt.Errorf("restore pid %d: %w", r.proc.PID, err)
			}
		}
	}
	return nil
}

// needPIDWriter says whether a plain job's processes and threads get their
// pids through the pid writer: on kernels without clone3 or its set_tid.
// (A container's restore starts one in any case.)
func (jr *jobRestore) needPIDWriter() bool {
	if jr.opts.Container != nil || kernel.Has(kernel.Clone3) && kernel.Has(kernel.Clone3SetTID) {
		return false
	}
	s := kernel.Current()
	jr.log.Debugf("pids are set through ns_last_pid: clone3 %s, set_tid %s", s.Why(kernel.Clone3), s.Why(kernel.Clone3SetTID))
	return true
}

// create makes the stub for r, given the processes already created.
func (jr *jobRestore) create(r *restorer, created []*restorer) error {
	p := r.proc
	parentSID := jr.outerSID(r)
	var parent *restorer
	if p.PPID != jr.outer {
		parent = jr.byPID[p.PPID]
		if parent == nil || parent.PID == 0 {
			return fmt.Errorf("parent pid %d is not in the image", p.PPID)
		}
		parentSID = parent.proc.SID
	}
	creator, flags := parent, uint64(0)
	newSession := false
	switch {
	case p.SID == parentSID:
	case p.SID == p.PID:
		newSession = true
	default:
		creator = nil
		for _, c := range created {
			if c.proc.PPID == p.PPID && c.proc.SID == p.SID {
				creator, flags = c, unix.CLONE_PARENT
				break
			}
		}
		if creator == nil {
			return fmt.Errorf("session %d cannot be rebuilt: its leader and every process of it that shares the parent of pid %d are gone (not supported)", p.SID, p.PID)
		}
	}
	if creator == nil && jr.opts.Container != nil {
		if err := jr.startContainer(r); err != nil {
			return err
		}
	} else if creator == nil {
		hostPID, err := jr.opts.Spawner.SpawnStub(jr.elf, p.PID, jr.maxPID)
		if err != nil {
			return fmt.Errorf("spawn stub: %w", err)
		}
		if hostPID <= 0 {
			return fmt.Errorf("spawn stub: no pid")
		}
		r.PID = hostPID
		if err := r.attach(hostPID, true); err != nil {
			return err
		}
	} else if err := creator.cloneProcess(r, flags); err != nil {
		return err
	}
	if newSession {
		if _, err := r.Main.Call("setsid", unix.SYS_SETSID); err != nil {
			return err
		}
	}
	if jr.opts.Container != nil && p.State != image.ProcZombie {
		return r.execExe()
	}
	return nil
}

// cloneProcess injects a clone with child's pid into r's stub. The child is
// a copy of the stub, traced from birth (PTRACE_O_TRACEFORK), so it never
// runs a stub instruction on its own.
func (r *restorer) cloneProcess(child *restorer, flags uint64) error {
	hostPID, err := r.clone(cloneArgs{Flags: flags, ExitSignal: uint64(unix.SIGCHLD)}, child.proc.PID, unix.PTRACE_EVENT_FORK)
	if err != nil {
		return err
	}
	child.PID = hostPID
	return child.attach(hostPID, false)
}

// setProcessGroups moves every process into its process group: leaders
// first, so the groups exist when their members join. A group whose leader
// has exited cannot be made again.
func (jr *jobRestore) setProcessGroups() error {
	for _, leaders := range []bool{true, false} {
		for _, r := range jr.procs {
			p := r.proc
			if (p.PGID == p.PID) != leaders || p.SID == p.PID {
				continue // session leaders lead their group already
			}
			if jr.opts.Container != nil && p.PGID == jr.outerPGID() {
				// The runtime's group, which every process of the
				// container is born into; its number may not even be
				// visible in the container's PID namespace.
				continue
			}
			if !leaders && jr.byPID[p.PGID] == nil && p.PGID != jr.outerPGID() {
				return fmt.Errorf("restore pid %d: process group %d has no leader left in the job (not supported)", p.PID, p.PGID)
			}
			pg := uint64(p.PGID)
			if leaders {
				pg = 0
			}
			if _, err := r.Main.Call("setpgid", unix.SYS_SETPGID, 0, pg); err != nil {
				return fmt.Errorf("restore pid %d: process group %d: %w", p.PID, p.PGID, err)
			}
		}
	}
	return nil
}

// outerSID is the session the main process is born into: init's, or for
// a container the one the runtime gives it, which is the recorded one when
// it was not the application's own.
func (jr *jobRestore) outerSID(r *restorer) int {
	if jr.opts.Container == nil {
		return initPID
	}
	m := jr.main().proc
	if m.SID == m.PID {
		return -1
	}
	return m.SID
}

// outerPGID is the process group the main process is born into.
func (jr *jobRestore) outerPGID() int {
	if jr.opts.Container == nil {
		return initPID
	}
	return jr.main().proc.PGID
}

// exitAsZombie ends a stub the way the zombie it stands for ended, leaving
// the same wait status for its parent. The parent is still a stub, whose
// SIGCHLD is ignored, so no signal is left pending for it.
func (r *restorer) exitAsZombie() error {
	ws := unix.WaitStatus(r.proc.ExitStatus)
	if ws.Signaled() {
		// No core file from a stub.
		unix.Prlimit(r.PID, unix.RLIMIT_CORE, &unix.Rlimit{}, nil)
		if err := r.t.Detach(r.PID, int(ws.Signal())); err != nil {
			return err
		}
		return nil
	}
	_, err := r.Main.Syscall(unix.SYS_EXIT_GROUP, uint64(ws.ExitStatus()))
	if r.t.Seized(r.PID) {
		return fmt.Errorf("exit as zombie with status %d: %v", ws.ExitStatus(), err)
	}
	return nil
}

// processIDs reads a process's pids in the job's namespace and its name.
func processIDs(hostPID int) (*image.Process, error) {
	st, err := proc.ReadStatus(strconv.Itoa(hostPID))
	if err != nil {
		return nil, err
	}
	p := &image.Process{}
	if p.PID, err = st.NSPid(); err != nil {
		return nil, err
	}
	stat, err := proc.ReadStat(hostPID)
	if err != nil {
		return nil, err
	}
	p.Comm = stat.Comm
	if stat.PPID != 0 {
		if p.PPID, err = nsPidOf(stat.PPID); err != nil {
			return nil, err
		}
	}
	p.PGID, p.SID = lastInt(st, "NSpgid"), lastInt(st, "NSsid")
	if stat.State == 'Z' {
		p.State = image.ProcZombie
		p.ExitStatus = stat.ExitCode
	}
	return p, nil
}

// nsPidOf maps a host pid to its pid in the innermost namespace.
func nsPidOf(hostPID int) (int, error) {
	st, err := proc.ReadStatus(strconv.Itoa(hostPID))
	if err != nil {
		return 0, err
	}
	return st.NSPid()
}

func lastInt(st proc.Status, key string) int {
	ids, err := st.Ints(key)
	if err != nil || len(ids) == 0 {
		return 0
	}
	return ids[len(ids)-1]
}
