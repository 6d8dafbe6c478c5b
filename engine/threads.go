package engine

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

const (
	prGetTIDAddress = 40 // PR_GET_TID_ADDRESS
	stackSize       = 24 // sizeof(stack_t)
	ssOnstack       = 1  // SS_ONSTACK
	ssDisable       = 2  // SS_DISABLE
)

// dumpThread records one stopped thread. th carries the registers taken at
// the stop; the injected calls here (sigaltstack, PR_GET_TID_ADDRESS) use
// the scratch area of rem and leave the registers as they were.
func dumpThread(t *ptrace.Tracer, rem *inject.Process, th *ptrace.Thread, hostPID int, rseq *rseqFinder) (image.Thread, error) {
	out := image.Thread{Regs: image.Regs(th.Saved)}
	st, err := proc.ReadStatus(fmt.Sprintf("%d/task/%d", hostPID, th.TID))
	if err != nil {
		return out, err
	}
	if out.TID, err = st.NSPid(); err != nil {
		return out, fmt.Errorf("thread %d: %w", th.TID, err)
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", hostPID, th.TID)); err == nil {
		out.Comm = strings.TrimSuffix(string(comm), "\n")
	}
	if out.Pending, err = dumpPending(t, th, th.TID == hostPID); err != nil {
		return out, fmt.Errorf("thread %d: %w", out.TID, err)
	}
	if out.XState, err = t.GetXState(th.TID); err != nil {
		return out, err
	}
	if out.SigMask, err = t.GetSigmask(th.TID); err != nil {
		return out, err
	}
	if out.Rseq, err = rseq.dumpRseq(t, th); err != nil {
		return out, err
	}
	if out.RobustList, out.RobustListLen, err = robustList(th.TID); err != nil {
		return out, fmt.Errorf("thread %d: %w", out.TID, err)
	}

	// What only the thread itself can tell: its signal stack and the
	// address the kernel clears when it exits (pthread_join waits on it).
	ssAddr, _ := rem.ScratchAt(0, stackSize)
	if _, err := th.Call("sigaltstack", unix.SYS_SIGALTSTACK, 0, ssAddr); err != nil {
		return out, err
	}
	ss := make([]byte, stackSize)
	if err := rem.Read(ssAddr, ss); err != nil {
		return out, err
	}
	le := binary.LittleEndian
	out.AltStack = image.AltStack{SP: le.Uint64(ss[0:]), Flags: int32(le.Uint32(ss[8:])), Size: le.Uint64(ss[16:])}
	tidAddr, _ := rem.ScratchAt(64, 8)
	if _, err := th.Call("prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL, prGetTIDAddress, tidAddr); err != nil {
		return out, err
	}
	buf := make([]byte, 8)
	if err := rem.Read(tidAddr, buf); err != nil {
		return out, err
	}
	out.ClearChildTID = le.Uint64(buf)
	return out, th.Restore()
}

// cloneArgs is struct clone_args (clone3), up to set_tid_size.
type cloneArgs struct {
	Flags      uint64
	Pidfd      uint64
	ChildTID   uint64
	ParentTID  uint64
	ExitSignal uint64
	Stack      uint64
	StackSize  uint64
	TLS        uint64
	SetTID     uint64
	SetTIDSize uint64
}

const threadCloneFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_THREAD | unix.CLONE_SYSVSEM

// restoreThreads creates the process's other threads with their original
// tids (clone3 with set_tid, allowed by CAP_CHECKPOINT_RESTORE in the job's
// user namespace, or the pid writer) and restores every thread's own state.
func (r *restorer) restoreThreads(p *image.Process) error {
	if len(p.Threads) == 0 || p.Threads[0].TID != p.PID {
		return fmt.Errorf("the image's first thread is not the main thread")
	}
	r.threads = []*ptrace.Thread{r.Main}
	for i := 1; i < len(p.Threads); i++ {
		th, err := r.cloneThread(p.Threads[i].TID)
		if err != nil {
			return fmt.Errorf("thread %d: %w", p.Threads[i].TID, err)
		}
		r.threads = append(r.threads, th)
	}
	for i, th := range r.threads {
		if err := r.restoreThreadState(th, &p.Threads[i]); err != nil {
			return fmt.Errorf("thread %d: %w", p.Threads[i].TID, err)
		}
	}
	return nil
}

// cloneThread injects clone into the main thread. The new thread starts
// life in a ptrace-stop (PTRACE_O_TRACECLONE), so it never runs a stub
// instruction: its registers are replaced before it is released.
func (r *restorer) cloneThread(tid int) (*ptrace.Thread, error) {
	hostTID, err := r.clone(cloneArgs{Flags: threadCloneFlags}, tid, unix.PTRACE_EVENT_CLONE)
	if err != nil {
		return nil, err
	}
	r.t.Adopt(hostTID)
	if _, err := r.t.WaitStop(hostTID, 0); err != nil {
		return nil, err
	}
	return r.t.NewThread(hostTID, r.layout.Gadget)
}

// clone injects clone3 with args and set_tid tid into the main thread and
// returns the host tid the ptrace event (event) reports for the new task.
// A tid of 0 takes whatever the kernel gives. Where the job's pid writer
// runs (a container's stubs, kernels without set_tid), it sets the PID
// counter instead of set_tid; on kernels without clone3 the task is made
// with clone.
func (r *restorer) clone(args cloneArgs, tid int, event int) (int, error) {
	tidAddr, _ := r.ScratchAt(0, 8)
	argsAddr, _ := r.ScratchAt(64, inject.SizeOf[cloneArgs]())
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(tid))
	if err := r.Write(tidAddr, b); err != nil {
		return 0, err
	}
	viaWriter := tid != 0 && r.job != nil && r.job.pids != nil
	if tid != 0 && !viaWriter {
		args.SetTID, args.SetTIDSize = tidAddr, 1
	}
	if err := inject.WriteValue(&r.Process, argsAddr, &args); err != nil {
		return 0, err
	}
	var hostTID int
	onEvent := func(ev int) error {
		if ev != event {
			return fmt.Errorf("unexpected ptrace event %d during clone", ev)
		}
		msg, err := r.t.GetEventMsg(r.Main.TID)
		if err != nil {
			return err
		}
		hostTID = int(msg)
		return nil
	}
	for attempt := 1; ; attempt++ {
		if viaWriter {
			// A container's stub: the pid writer sets the counter.
			if err := r.job.setLastPID(tid - 1); err != nil {
				return 0, err
			}
		}
		hostTID = 0
		var ret int64
		var err error
		if kernel.Has(kernel.Clone3) {
			ret, err = r.Main.SyscallEvent(onEvent, unix.SYS_CLONE3, argsAddr, inject.SizeOf[cloneArgs]())
		} else {
			// clone(flags | exit signal, stack, parent_tid, child_tid, tls)
			ret, err = r.Main.SyscallEvent(onEvent, unix.SYS_CLONE, args.Flags|args.ExitSignal, args.Stack,
				args.ParentTID, args.ChildTID, args.TLS)
		}
		if err != nil {
			return 0, err
		}
		if ret < 0 {
			err := fmt.Errorf("clone with id %d in pid %d: %w", tid, r.proc.PID, unix.Errno(-ret))
			if unix.Errno(-ret) == unix.EEXIST {
				err = fmt.Errorf("%w (%w)", err, ErrIDTaken)
				if who := pidHolder(r.PID, tid); who != "" {
					err = fmt.Errorf("%w: id %d is held by %s", err, tid, who)
				}
			}
			return 0, err
		}
		if tid == 0 || int(ret) == tid {
			break
		}
		// Another task of the namespace forked between the counter's
		// write and the clone: the copy goes and the clone is tried
		// again while the id is still free.
		if hostTID != 0 {
			if derr := r.discardClone(hostTID, uint64(ret), event); derr != nil {
				return 0, derr
			}
		}
		if !viaWriter || attempt == maxCloneAttempts {
			err := fmt.Errorf("clone gave id %d, want %d (%w)", ret, tid, ErrIDTaken)
			if who := pidHolder(r.PID, tid); who != "" {
				err = fmt.Errorf("clone gave id %d, want %d, which is held by %s (%w)", ret, tid, who, ErrIDTaken)
			}
			return 0, err
		}
		r.log.Debugf("pid %d: clone gave id %d, want %d; trying again", r.proc.PID, ret, tid)
	}
	if hostTID == 0 {
		return 0, fmt.Errorf("clone: no ptrace event for the new task %d", tid)
	}
	return hostTID, nil
}

// maxCloneAttempts bounds the clones tried for one id through the pid
// writer.
const maxCloneAttempts = 5

// discardClone ends a task cloned with the wrong id: it exits from its
// birth stop, and a process is reaped by its stub parent, so the job never
// sees it.
func (r *restorer) discardClone(hostTID int, nsID uint64, event int) error {
	r.t.Adopt(hostTID)
	if _, err := r.t.WaitStop(hostTID, 0); err != nil {
		return fmt.Errorf("discard task %d: %w", hostTID, err)
	}
	th, err := r.t.NewThread(hostTID, r.layout.Gadget)
	if err != nil {
		return err
	}
	// The call never returns: WaitStop collects the exit and reports it.
	th.Syscall(unix.SYS_EXIT, 0)
	if r.t.Seized(hostTID) {
		return fmt.Errorf("discard task %d: it did not exit", hostTID)
	}
	if event == unix.PTRACE_EVENT_FORK {
		if _, err := r.Main.Call("wait4", unix.SYS_WAIT4, nsID, 0, unix.WALL, 0); err != nil {
			return fmt.Errorf("discard task %d: %w", hostTID, err)
		}
	}
	return nil
}

// restoreThreadState sets what each thread owns: robust futex list, the
// tid address cleared at exit, signal stack, rseq area, name.
func (r *restorer) restoreThreadState(th *ptrace.Thread, st *image.Thread) error {
	if st.RobustList != 0 {
		if _, err := th.Call("set_robust_list", unix.SYS_SET_ROBUST_LIST, st.RobustList, st.RobustListLen); err != nil {
			return err
		}
	}
	if _, err := th.Call("set_tid_address", unix.SYS_SET_TID_ADDRESS, st.ClearChildTID); err != nil {
		return err
	}
	if st.AltStack.Flags&ssDisable == 0 && st.AltStack.Size > 0 {
		ss := make([]byte, stackSize)
		le := binary.LittleEndian
		le.PutUint64(ss[0:], st.AltStack.SP)
		le.PutUint32(ss[8:], uint32(st.AltStack.Flags&^ssOnstack))
		le.PutUint64(ss[16:], st.AltStack.Size)
		addr, _ := r.ScratchAt(0, stackSize)
		if err := r.Write(addr, ss); err != nil {
			return err
		}
		if _, err := th.Call("sigaltstack", unix.SYS_SIGALTSTACK, addr, 0); err != nil {
			return err
		}
	}
	if st.Comm != "" {
		addr, err := r.PutString(0, st.Comm)
		if err != nil {
			return err
		}
		if _, err := th.Call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, addr); err != nil {
			return err
		}
	}
	if err := r.restoreRseq(th, st.Rseq); err != nil {
		return err
	}
	if err := r.restoreCreds(th, &r.proc.Creds); err != nil {
		return err
	}
	return r.t.SetSigmask(th.TID, st.SigMask)
}

// setFinalRegs gives a thread the registers and extended state it had at
// checkpoint time, resolving an interrupted system call the way the kernel
// would have.
func (r *restorer) setFinalRegs(th *ptrace.Thread, st *image.Thread) error {
	regs := ptrace.Regs(st.Regs)
	ptrace.ResolveRestart(&regs)
	area, err := r.xstateHere(th.TID, st.XState)
	if err != nil {
		return fmt.Errorf("tid %d: %w", st.TID, err)
	}
	if err := r.t.SetXState(th.TID, area); err != nil {
		return err
	}
	return r.t.SetRegs(th.TID, &regs)
}

// dumpPending records the signals queued for a thread with their siginfo,
// and for the main thread also those queued for the whole process.
//
// Signals an earlier injected step took off the queue (th.Deferred) are
// recorded as well, with the siginfo of the tgkill that gives them back to
// the running job, so the image and the job agree. Call it before any
// further injection into the thread.
func dumpPending(t *ptrace.Tracer, th *ptrace.Thread, main bool) ([]image.SigInfo, error) {
	var out []image.SigInfo
	add := func(raw []byte, shared bool) error {
		if _, err := checkSiginfo(raw); err != nil {
			return err
		}
		out = append(out, image.SigInfo{Shared: shared, Raw: raw})
		return nil
	}
	raws, err := t.PeekSiginfo(th.TID, false)
	if err != nil {
		return nil, err
	}
	for _, raw := range raws {
		if err := add(raw, false); err != nil {
			return nil, err
		}
	}
	for _, sig := range th.Deferred {
		if err := add(tkillSiginfo(sig), false); err != nil {
			return nil, err
		}
	}
	if !main {
		return out, nil
	}
	if raws, err = t.PeekSiginfo(th.TID, true); err != nil {
		return nil, err
	}
	for _, raw := range raws {
		if err := add(raw, true); err != nil {
			return nil, err
		}
	}
	return out, nil
}
