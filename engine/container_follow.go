package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// follow runs the runtime until the stub has been exec'd in the container.
// The runtime's main process runs with system call stops: its fork of the
// container process is given the application's pid (no inner PID
// namespace), or the container process is followed the same way until it
// forks the application (inner PID namespace, whose init it is). Every
// other task the runtime makes is let go at its first stop.
func (cl *containerLaunch) follow() error {
	deadline := time.Now().Add(startTimeout)
	for spin := 0; cl.stub == 0; spin++ {
		progressed := false
		if cl.unpark {
			if err := cl.unparkAll(); err != nil {
				return err
			}
		}
		for tid, task := range cl.tasks {
			if task.parked {
				continue
			}
			var ws unix.WaitStatus
			pid, err := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil)
			if err == unix.EINTR || (err == nil && pid == 0) {
				continue
			}
			if err != nil {
				delete(cl.tasks, tid)
				continue
			}
			progressed = true
			if ws.Exited() || ws.Signaled() {
				delete(cl.tasks, tid)
				cl.jr.t.Forget(tid)
				if tid == cl.runtime.PID {
					return fmt.Errorf("the container runtime exited before starting the application (%s); its messages are in the job's output", describeWait(ws))
				}
				continue
			}
			if err := cl.stopped(tid, task, ws); err != nil {
				return err
			}
			if cl.stub != 0 {
				return nil
			}
		}
		if progressed {
			spin = 0
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the container runtime did not start the application within %v", startTimeout)
		}
		ptrace.Backoff(spin)
	}
	return nil
}

// stopped handles one stop of a runtime task.
func (cl *containerLaunch) stopped(tid int, task *runtimeTask, ws unix.WaitStatus) error {
	sig := ws.StopSignal()
	event := int(uint32(ws) >> 16)
	switch {
	case !task.started:
		task.started = true
		if task.role == roleOther {
			cl.drop(tid)
			return nil
		}
		return cl.resume(tid)
	case sig == unix.SIGTRAP|0x80:
		return cl.syscallStop(tid, task)
	case sig == unix.SIGTRAP && (event == unix.PTRACE_EVENT_FORK || event == unix.PTRACE_EVENT_VFORK || event == unix.PTRACE_EVENT_CLONE):
		msg, err := cl.jr.t.GetEventMsg(tid)
		if err != nil {
			return err
		}
		if err := cl.born(task, int(msg), event); err != nil {
			return err
		}
		return cl.resume(tid)
	case sig == unix.SIGTRAP && event == unix.PTRACE_EVENT_EXEC:
		if task.role == roleRuntime && cl.cs.Instance && tid != cl.runtime.PID && cl.cs.KeepsContainer != nil && !cl.cs.KeepsContainer(tid) {
			// A helper of the instance's (squashfuse_ll, fuse-overlayfs):
			// it must run on while the application is restored.
			cl.drop(tid)
			return nil
		}
		if task.role == roleApp || (task.role == roleContainer && !cl.cs.InnerPIDNamespace) {
			if isStub, err := cl.execedStub(tid); err != nil {
				return err
			} else if isStub {
				cl.stub = tid
				delete(cl.tasks, tid)
				return nil
			}
		}
		return cl.resume(tid)
	case sig == unix.SIGTRAP && event != 0:
		return cl.resume(tid)
	case event == unix.PTRACE_EVENT_STOP:
		// A group stop (the runtime stopping a child) or a leftover
		// interrupt: let it be.
		return cl.resumeSignal(tid, 0)
	default:
		return cl.resumeSignal(tid, int(sig))
	}
}

// born records a task the kernel attached because a traced task forked or
// cloned it.
func (cl *containerLaunch) born(pt *runtimeTask, child int, event int) error {
	nt := &runtimeTask{role: roleOther}
	switch {
	case event == unix.PTRACE_EVENT_CLONE:
		// A thread: the threads of the tasks the restore follows are
		// followed too.
		nt.role = pt.role
	case pt.forking && pt.role == roleRuntime:
		nt.role = roleContainer
		cl.container = child
		pt.forking = false
	case pt.forking && pt.role == roleContainer:
		nt.role = roleApp
		pt.forking = false
	case pt.role == roleRuntime && cl.cs.Instance && cl.container == 0:
		// The instance's starter, its daemon and their helpers: one of
		// them makes the container process.
		nt.role = roleRuntime
	}
	cl.jr.log.Debugf("container runtime: new task %d (role %d, event %d)", child, nt.role, event)
	if nt.role == roleContainer && !cl.cs.InnerPIDNamespace || nt.role == roleApp {
		// The application's pid is taken: the runtime's next tasks go
		// above every pid of the image again.
		if err := cl.jr.setLastPID(cl.jr.pidsAbove()); err != nil {
			return err
		}
		cl.unpark = true
	}
	if nt.role == roleContainer && cl.cs.InnerPIDNamespace {
		// The child is the init of the application's PID namespace; it
		// has not run yet. The restore's pid writer enters the new
		// namespace now, and moves its counter above the application's
		// pids, so that none of the runtime's tasks takes one.
		if err := cl.jr.enterPIDNamespace(child); err != nil {
			return err
		}
		if err := cl.jr.setLastPID(cl.jr.maxPID); err != nil {
			return err
		}
	}
	// Its first stop is collected once it is known: a task is only
	// waited for after its parent's event names it.
	cl.jr.t.Adopt(child)
	cl.tasks[child] = nt
	return nil
}

// syscallStop handles a system call entry or exit of a followed task: at
// the entry of the fork that makes the process the restore waits for, the
// PID counter is set so that the child gets the application's pid.
func (cl *containerLaunch) syscallStop(tid int, task *runtimeTask) error {
	if kind, err := cl.jr.t.SyscallStopKind(tid); errors.Is(err, unix.ESRCH) {
		return nil
	} else if err != nil {
		return err
	} else if kind != ptrace.SyscallEntry {
		// The fork the other tasks were parked for has returned, even
		// one that failed.
		cl.unpark = true
		return cl.resume(tid)
	}
	regs, err := cl.jr.t.GetRegs(tid)
	if errors.Is(err, unix.ESRCH) {
		return nil // killed meanwhile; its exit is collected next
	}
	if err != nil {
		return err
	}
	var flags uint64
	switch ptrace.SyscallNr(&regs) {
	case unix.SYS_CLONE:
		flags = ptrace.SyscallArg(&regs, 0)
	case unix.SYS_CLONE3:
		b := make([]byte, 8)
		rem := inject.Process{PID: tid}
		if err := rem.Read(ptrace.SyscallArg(&regs, 0), b); err != nil {
			return err
		}
		flags = binary.LittleEndian.Uint64(b)
	case unix.SYS_FORK:
	case unix.SYS_VFORK:
		flags = unix.CLONE_VM | unix.CLONE_VFORK
	default:
		return cl.resume(tid)
	}
	cl.jr.log.Debugf("container runtime: task %d (role %d) forks with flags %#x", tid, task.role, flags)
	switch {
	case flags&unix.CLONE_THREAD != 0:
	case task.role == roleRuntime && cl.container == 0 && cl.cs.Instance:
		// An instance always has a PID namespace of its own, and the
		// daemon's clone that makes it makes the container process.
		task.forking = flags&unix.CLONE_NEWPID != 0
	case task.role == roleRuntime && cl.container == 0 && flags&sharedCloneFlags == 0:
		// The runtime's container process: with no inner PID namespace
		// it is the application's main process.
		task.forking = true
		if !cl.cs.InnerPIDNamespace {
			cl.park(tid)
			if err := cl.jr.setLastPID(cl.want - 1); err != nil {
				return err
			}
		}
	case task.role == roleContainer && cl.cs.InnerPIDNamespace:
		// Any process the inner init forks may be the application's:
		// each gets the application's pid while it is free.
		task.forking = true
		cl.park(tid)
		if err := cl.jr.setLastPID(cl.want - 1); err != nil {
			return err
		}
	}
	return cl.resume(tid)
}

// park stops every followed task but except before the PID counter is
// set for the fork of except: a thread another task started while the
// counter points at the application's pids would take one of them, and
// keep it for the whole restore. Their stops are kept and handled once
// that fork is done (unparkAll). A task that does not stop in time (a
// vfork parent waiting for its child) runs on.
func (cl *containerLaunch) park(except int) {
	var asked []int
	for tid, task := range cl.tasks {
		if tid == except || task.parked {
			continue
		}
		if err := cl.jr.t.Interrupt(tid); err == nil {
			asked = append(asked, tid)
		}
	}
	deadline := time.Now().Add(parkTimeout)
	for _, tid := range asked {
		for spin := 0; ; spin++ {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil)
			if err == unix.EINTR {
				continue
			}
			if err == nil && pid == tid {
				cl.tasks[tid].parked, cl.tasks[tid].parkedStop = true, ws
				break
			}
			if err != nil || time.Now().After(deadline) {
				cl.jr.log.Debugf("container runtime: task %d not parked: %v", tid, err)
				break
			}
			ptrace.Backoff(spin)
		}
	}
}

// unparkAll handles the stops park kept.
func (cl *containerLaunch) unparkAll() error {
	cl.unpark = false
	for tid, task := range cl.tasks {
		if !task.parked {
			continue
		}
		task.parked = false
		ws := task.parkedStop
		if ws.Exited() || ws.Signaled() {
			delete(cl.tasks, tid)
			cl.jr.t.Forget(tid)
			continue
		}
		if err := cl.stopped(tid, task, ws); err != nil {
			return err
		}
	}
	return nil
}

// resume lets a followed task go on to its next system call stop (the
// runtime's main process, and the container process when it is the
// inner init) or event.
func (cl *containerLaunch) resume(tid int) error { return cl.resumeSignal(tid, 0) }

// resumeSignal is resume delivering sig.
func (cl *containerLaunch) resumeSignal(tid, sig int) error {
	task := cl.tasks[tid]
	follow := task != nil && (task.role == roleRuntime && cl.container == 0 ||
		task.role == roleContainer && cl.cs.InnerPIDNamespace)
	var err error
	if follow {
		err = cl.jr.t.ContSyscall(tid, sig)
	} else {
		err = cl.jr.t.Cont(tid, sig)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("container runtime: resume %d: %w", tid, err)
	}
	return nil
}

// drop lets a task of the runtime go.
func (cl *containerLaunch) drop(tid int) {
	delete(cl.tasks, tid)
	cl.jr.t.Detach(tid, 0)
}

// hold stops every runtime task still followed and returns them.
func (cl *containerLaunch) hold() []int {
	var held []int
	for tid, task := range cl.tasks {
		if cl.stopTask(tid, task) {
			held = append(held, tid)
		}
	}
	cl.tasks = map[int]*runtimeTask{}
	return held
}

// letGo detaches every runtime task still followed.
func (cl *containerLaunch) letGo() {
	for tid, task := range cl.tasks {
		if cl.stopTask(tid, task) {
			cl.jr.t.Detach(tid, 0)
		}
	}
	cl.tasks = map[int]*runtimeTask{}
}

// stopTask brings a followed task into a stop (it may only be detached in
// one): it is interrupted and its next stop, whatever it is, taken. It
// reports false for a task that is gone, and for one that did not stop in
// time, which is kept in runtimeUnstopped to be let go later.
func (cl *containerLaunch) stopTask(tid int, task *runtimeTask) bool {
	if task.parked {
		return true // in the stop park took
	}
	if task.started {
		cl.jr.t.Interrupt(tid)
	}
	_, err := cl.jr.t.WaitStop(tid, time.Second)
	if err == nil {
		return true
	}
	if errors.Is(err, ptrace.ErrTimeout) {
		cl.jr.runtimeUnstopped = append(cl.jr.runtimeUnstopped, tid)
	} else {
		cl.jr.t.Forget(tid)
	}
	return false
}

// releaseUnstopped detaches the runtime tasks that had not stopped when
// they were to be held, once they stop: a vfork parent does once its child
// has been let go. Left attached, such a task would sit in a ptrace-stop
// for good, and the sandbox could never end.
func (jr *jobRestore) releaseUnstopped() {
	if len(jr.runtimeUnstopped) > 0 {
		jr.log.Debugf("container runtime: %d tasks had not stopped; letting them go", len(jr.runtimeUnstopped))
	}
	detachWhenStopped(jr.t, jr.runtimeUnstopped, runtimeReleaseTimeout, func(int) int { return 0 })
	jr.runtimeUnstopped = nil
}

// execedStub reports whether task tid has just exec'd the restore stub.
func (cl *containerLaunch) execedStub(tid int) (bool, error) {
	regs, err := cl.jr.t.GetRegs(tid)
	if err != nil {
		return false, err
	}
	if ptrace.PC(&regs) != cl.jr.layout.Entry {
		return false, nil
	}
	exe, err := os.Readlink("/proc/" + strconv.Itoa(tid) + "/exe")
	if err != nil {
		return false, fmt.Errorf("pid %d: exe: %w", tid, err)
	}
	cl.jr.log.Debugf("container process %d exec'd the restore stub (%s)", tid, exe)
	return true, nil
}

// describeWait says how a task ended.
func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// taskRole is what a traced task of the starting runtime is to the restore.
type taskRole int

const (
	roleOther     taskRole = iota // let go at its first stop
	roleRuntime                   // a thread of the runtime's main process
	roleContainer                 // the runtime's container process (and its threads, with an inner PID namespace)
	roleApp                       // a child of the container process that may exec the stub
)

type runtimeTask struct {
	role taskRole
	// forking is set, at its system call entry, for a fork that makes
	// the process the restore waits for.
	forking bool
	started bool // past its first stop
	// parked is set while the task is kept in the stop parkedStop
	// (park), to be handled once the fork that needs a pid is done.
	parked     bool
	parkedStop unix.WaitStatus
}
