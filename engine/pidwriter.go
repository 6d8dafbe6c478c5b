package engine

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// pidWriter sets the PID counter (ns_last_pid) of the application's PID
// namespace for stubs that cannot choose their own pids: on kernels without
// clone3 set_tid (before 5.5), and in containers.
//
// A stub the container runtime starts runs in the runtime's user namespace
// without capabilities, so clone3 with set_tid is closed to it. The
// counter is written by a helper stub the sandbox starts with the
// restore's capabilities; for an application in a PID namespace of the
// runtime's, by the helper's child forked into that namespace (the
// counter written is the writer's own namespace's). Each creation then
// takes the pid after the counter, which holds as long as nothing else
// forks in the namespace meanwhile; the result is checked.
type pidWriter struct {
	host  *restorer // the helper, in the sandbox's PID namespace
	inner *restorer // its child in the application's PID namespace, or nil
	fd    uint64    // ns_last_pid, open in host (inherited by inner)
}

// startPIDWriter starts the helper. Its pid is above every pid of the
// image, so that the tasks the container runtime starts after it take none
// of the application's pids.
func (jr *jobRestore) startPIDWriter() error {
	pid := jr.maxPID + 1
	if cs := jr.opts.Container; cs != nil && cs.RuntimePID >= pid {
		pid = cs.RuntimePID + 1
	}
	hostPID, err := jr.opts.Spawner.SpawnStub(jr.elf, pid, pid)
	if err != nil {
		return fmt.Errorf("spawn the pid writer: %w", err)
	}
	h := &restorer{t: jr.t, log: jr.log, job: jr, proc: &image.Process{PID: pid}, layout: jr.layout, Process: inject.Process{PID: hostPID}}
	jr.pids = &pidWriter{host: h}
	if err := h.attach(hostPID, true); err != nil {
		return fmt.Errorf("pid writer: %w", err)
	}
	fd, err := h.Openat("/proc/sys/kernel/ns_last_pid", unix.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pid writer: %w", err)
	}
	jr.pids.fd = fd
	return nil
}

// enterPIDNamespace forks the writer's child into the PID namespace whose
// init is hostPID (once).
func (jr *jobRestore) enterPIDNamespace(hostPID int) error {
	w := jr.pids
	if w == nil || w.inner != nil {
		return nil
	}
	st, err := proc.ReadStatus(strconv.Itoa(hostPID))
	if err != nil {
		return err
	}
	ids, err := st.Ints("NSpid")
	if err != nil || len(ids) < 3 {
		return fmt.Errorf("pid writer: pid %d is not in a PID namespace below the sandbox's (NSpid %v)", hostPID, ids)
	}
	// ids[1] is the pid in the sandbox's namespace, the helper's /proc.
	nsFD, err := w.host.Openat(fmt.Sprintf("/proc/%d/ns/pid", ids[1]), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pid writer: %w", err)
	}
	defer w.host.Main.Syscall(unix.SYS_CLOSE, nsFD)
	if _, err := w.host.Main.Call("setns(CLONE_NEWPID)", unix.SYS_SETNS, nsFD, unix.CLONE_NEWPID); err != nil {
		return fmt.Errorf("pid writer: %w", err)
	}
	childHost, err := w.host.clone(cloneArgs{ExitSignal: uint64(unix.SIGCHLD)}, 0, unix.PTRACE_EVENT_FORK)
	if err != nil {
		return fmt.Errorf("pid writer: fork into the application's PID namespace: %w", err)
	}
	in := &restorer{t: jr.t, log: jr.log, job: jr, proc: &image.Process{}, layout: jr.layout, Process: inject.Process{PID: childHost}}
	if err := in.attach(childHost, false); err != nil {
		return fmt.Errorf("pid writer: %w", err)
	}
	w.inner = in
	jr.log.Debugf("pid writer %d entered the PID namespace of %d", childHost, hostPID)
	return nil
}

// setLastPID sets the application's PID namespace's counter: the next
// task created there gets the first free pid after last.
func (jr *jobRestore) setLastPID(last int) error {
	w := jr.pids
	if w == nil {
		return fmt.Errorf("no pid writer")
	}
	r := w.host
	if w.inner != nil {
		r = w.inner
	}
	s := strconv.Itoa(last)
	addr, err := r.PutString(0, s)
	if err != nil {
		return err
	}
	// At offset 0: a numeric sysctl ignores writes elsewhere.
	if _, err := r.Main.Call("write ns_last_pid", unix.SYS_PWRITE64, w.fd, addr, uint64(len(s)), 0); err != nil {
		return fmt.Errorf("pid writer: %w", err)
	}
	return nil
}

// pidsAbove is the counter value that keeps new tasks off the image's
// pids: the helper's own pid in the sandbox's namespace (above them all),
// or the image's highest pid in an inner namespace.
func (jr *jobRestore) pidsAbove() int {
	if jr.pids.inner != nil {
		return jr.maxPID
	}
	return jr.pids.host.proc.PID
}

// stop ends the writer's processes.
func (w *pidWriter) stop() {
	for _, r := range []*restorer{w.inner, w.host} {
		if r == nil || r.PID == 0 {
			continue
		}
		r.t.Detach(r.PID, 0)
		unix.Kill(r.PID, unix.SIGKILL)
	}
}
