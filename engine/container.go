package engine

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// ContainerStubFD is the descriptor the container runtime inherits the
// restore stub on: the container's command at restart is
// /proc/self/fd/ContainerStubFD, which the runtime passes through to the
// container process like any inherited descriptor.
const ContainerStubFD = 63

// ContainerStart says how a restore has the container runtime build the
// application's container again: the runtime is started with the recorded
// command line, whose application command is the restore stub, and the
// stub it starts becomes the application's main process.
type ContainerStart struct {
	// Path is the runtime executable, Argv its full command line (the
	// application command replaced by /proc/self/fd/ContainerStubFD),
	// Env and Dir its environment and working directory.
	Path string
	Argv []string
	Env  []string
	Dir  string
	// RuntimePID is the sandbox pid the runtime had at checkpoint time.
	RuntimePID int
	// InnerPIDNamespace: the application ran in a PID namespace of the
	// runtime's, whose init is the runtime's and whose pids the image
	// holds.
	InnerPIDNamespace bool
	// Instance: the runtime starts an Apptainer instance. Its launcher
	// starts a daemon that outlives it, the container process is the one
	// a task of the daemon clones into a new PID namespace, and the stub
	// runs as the instance's startscript, from StubFile.
	Instance bool
	// StubFile, when set, is where the restore writes the stub executable
	// for the runtime to find it by path.
	StubFile string
	// Check, when set, vets the new container once its process runs
	// (hostPID), before anything of the application is restored.
	Check func(hostPID int) error
	// KeepsContainer, for an instance, says whether a task of the runtime
	// that just exec'd (hostPID) goes on to become the container (the
	// runtime's own starter) rather than being a helper that must run on
	// untraced (squashfuse_ll, fuse-overlayfs).
	KeepsContainer func(hostPID int) bool
}

// startTimeout bounds the runtime's start, up to the stub's exec.
const startTimeout = 60 * time.Second

// Clone flags that mark a task sharing its creator's memory, files or
// thread group: never the container's process.
const sharedCloneFlags = unix.CLONE_THREAD | unix.CLONE_VM | unix.CLONE_VFORK | unix.CLONE_FILES

// traceOpts are the options of every task of the runtime the restore
// follows.
const traceOpts = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK |
	unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACESYSGOOD

// containerLaunch follows the container runtime from its exec to the exec
// of the restore stub in the container, steering the PID of the one
// process that must keep its PID.
type containerLaunch struct {
	jr      *jobRestore
	cs      *ContainerStart
	want    int // the application's main pid (in its own PID namespace)
	runtime *restorer
	tasks   map[int]*runtimeTask
	// container is the host pid of the runtime's container process.
	container int
	stub      int
	// unpark is set once the fork the other tasks were parked for is
	// done: follow then handles their stops.
	unpark bool
}

// startContainer starts the runtime for r, the application's main process,
// and returns once r's stub runs in the new container with r's pid, traced
// and stopped. The runtime's pid writer is set up on the way.
func (jr *jobRestore) startContainer(r *restorer) error {
	cs := jr.opts.Container
	cl := &containerLaunch{jr: jr, cs: cs, want: r.proc.PID, tasks: map[int]*runtimeTask{}}
	rt := &restorer{t: jr.t, log: jr.log, job: jr, proc: &image.Process{PID: cs.RuntimePID}, layout: jr.layout}
	hostPID, err := jr.opts.Spawner.SpawnStub(jr.elf, cs.RuntimePID, max(jr.maxPID, cs.RuntimePID))
	if err != nil {
		return fmt.Errorf("spawn the container runtime's stub: %w", err)
	}
	if err := rt.attach(hostPID, true); err != nil {
		return err
	}
	if cs.StubFile != "" {
		if err := writeStubExecutable(cs.StubFile, jr.elf); err != nil {
			return err
		}
	}
	cl.runtime = rt
	jr.runtimeHost = hostPID
	if err := jr.startPIDWriter(); err != nil {
		return err
	}
	if err := cl.execRuntime(); err != nil {
		return err
	}
	if err := cl.follow(); err != nil {
		cl.letGo()
		return err
	}
	// The runtime's tasks stay stopped until the restore ends: a thread
	// they start meanwhile would take a pid the application needs.
	jr.heldRuntime = cl.hold()
	r.PID = cl.stub
	if err := r.attachStopped(cl.stub); err != nil {
		return err
	}
	got, err := nsPidOf(cl.stub)
	if err != nil {
		return err
	}
	if got != r.proc.PID {
		return fmt.Errorf("the container runtime started the application with pid %d, not %d", got, r.proc.PID)
	}
	// The container exists: its files can be checked as its processes
	// will see them.
	root := fmt.Sprintf("/proc/%d/root", cl.stub)
	if err := restoreLocalFiles(jr.opts.Gen, root, jr.log); err != nil {
		return err
	}
	for _, o := range jr.procs {
		if o.proc.State == image.ProcZombie {
			continue
		}
		if err := preflight(o.proc, jr.opts, root); err != nil {
			return &node.Error{Err: fmt.Errorf("restore pid %d: %w", o.proc.PID, err)}
		}
	}
	if cs.Check != nil {
		if err := cs.Check(cl.stub); err != nil {
			return &node.Error{Err: err}
		}
	}
	return nil
}

// execRuntime turns the runtime's stub into the runtime: without the
// restore's capabilities, with the stub executable on ContainerStubFD, in
// the recorded directory, the recorded command line and environment.
func (cl *containerLaunch) execRuntime() error {
	rt, cs := cl.runtime, cl.cs
	if _, err := rt.Main.Call("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return err
	}
	if err := rt.writeStubFile(cl.jr.elf, ContainerStubFD); err != nil {
		return fmt.Errorf("container runtime: %w", err)
	}
	if cs.Dir != "" {
		addr, err := rt.PutString(0, cs.Dir)
		if err != nil {
			return err
		}
		if _, err := rt.Main.Call("chdir "+cs.Dir, unix.SYS_CHDIR, addr); err != nil {
			return fmt.Errorf("container runtime: %w", err)
		}
	}
	if err := cl.jr.t.SetOptions(rt.PID, traceOpts); err != nil {
		return err
	}
	// The capabilities go with the exec: a process that is not root in
	// the job's namespace keeps none once it runs a new program.
	if err := rt.exec(cs.Path, cs.Argv, cs.Env); err != nil {
		return fmt.Errorf("container runtime: %w", err)
	}
	cl.tasks[rt.PID] = &runtimeTask{role: roleRuntime, started: true}
	return cl.resume(rt.PID)
}

// writeStubExecutable writes the stub to path, readable and executable by
// its owner only.
func writeStubExecutable(path string, elf []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, elf, 0o700); err != nil {
		return fmt.Errorf("write the restore stub: %w", err)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("write the restore stub: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write the restore stub: %w", err)
	}
	return nil
}

// writeStubFile puts the executable elf into a memfd on descriptor fd of
// the stub, inheritable across exec.
func (r *restorer) writeStubFile(elf []byte, fd uint64) error {
	name, err := r.PutString(0, "ckpt-stub")
	if err != nil {
		return err
	}
	mfd, err := r.Main.Call("memfd_create", unix.SYS_MEMFD_CREATE, name, unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	chunk := r.Size
	for off := uint64(0); off < uint64(len(elf)); off += chunk {
		end := min(off+chunk, uint64(len(elf)))
		if err := r.Write(r.Scratch, elf[off:end]); err != nil {
			return err
		}
		n, err := r.Main.Call("pwrite64 stub", unix.SYS_PWRITE64, mfd, r.Scratch, end-off, off)
		if err != nil {
			return err
		}
		if n != end-off {
			return fmt.Errorf("pwrite64 stub: short write (%d of %d)", n, end-off)
		}
	}
	if _, err := r.Main.Call("dup3 stub", unix.SYS_DUP3, mfd, fd, 0); err != nil {
		return err
	}
	_, err = r.Main.Call("close", unix.SYS_CLOSE, mfd)
	return err
}

// putExecArgs lays out execve's path, argv and envp in the scratch area.
func (r *restorer) putExecArgs(path string, argv, env []string) (pathAddr, argvAddr, envAddr uint64, err error) {
	var strs []byte
	var offs []int
	add := func(s string) {
		offs = append(offs, len(strs))
		strs = append(append(strs, s...), 0)
	}
	add(path)
	for _, s := range argv {
		add(s)
	}
	for _, s := range env {
		add(s)
	}
	ptrs := uint64(8 * (len(argv) + len(env) + 2))
	ptrBase, err := r.ScratchAt(0, ptrs+uint64(len(strs)))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("command line and environment: %w", err)
	}
	strBase := ptrBase + ptrs
	table := make([]byte, ptrs)
	i := 0
	put := func(v uint64) { binary.LittleEndian.PutUint64(table[8*i:], v); i++ }
	for k := range argv {
		put(strBase + uint64(offs[1+k]))
	}
	put(0)
	for k := range env {
		put(strBase + uint64(offs[1+len(argv)+k]))
	}
	put(0)
	if err := r.Write(ptrBase, append(table, strs...)); err != nil {
		return 0, 0, 0, err
	}
	return strBase, ptrBase, ptrBase + uint64(8*(len(argv)+1)), nil
}

// parkTimeout bounds the wait for the runtime's other tasks to stop before
// a fork that needs a given pid.
const parkTimeout = time.Second

// runtimeReleaseTimeout bounds the wait for runtime tasks that had not
// stopped.
const runtimeReleaseTimeout = 10 * time.Second

// execExe makes a container's stub run the image's executable and turns
// it back into a stub, so that its /proc/pid/exe names the executable.
//
// Pointing the exe link at a file (prctl PR_SET_MM_MAP's exe_fd) needs
// CAP_CHECKPOINT_RESTORE in the process's user namespace, which a process
// the container runtime starts does not have; and programs use the link
// (busybox's shell runs its applets through /proc/self/exe). An exec sets
// it like any exec does. The new program never runs: at the exec stop a
// `syscall; int3` gadget is written at its entry point, the stub's code
// and scratch area are mapped back where they were, and the memory phase
// later removes everything the exec mapped.
func (r *restorer) execExe() error {
	path := r.proc.Exe.Path
	if err := r.t.SetOptions(r.PID, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK|unix.PTRACE_O_TRACEEXEC); err != nil {
		return err
	}
	if err := r.exec(path, []string{path}, nil); err != nil {
		return fmt.Errorf("in the container: %w", err)
	}
	// The exec stop comes before the system call's exit; one step
	// finishes the exit and stops before the program's first instruction.
	if err := r.t.SingleStep(r.PID); err != nil {
		return fmt.Errorf("exec %s: step: %w", path, err)
	}
	if _, err := r.t.WaitStop(r.PID, 0); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	at, err := r.t.GetRegs(r.PID)
	if err != nil {
		return err
	}
	entry := ptrace.PC(&at)
	l := r.layout
	if err := checkStubRoom(r.PID, entry, l.Base, l.End); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	if err := r.t.PokeText(r.PID, uintptr(entry), append(inject.SyscallInsn, inject.BreakInsn...)); err != nil {
		return fmt.Errorf("exec %s: write gadget: %w", path, err)
	}
	tmp, err := r.t.NewThread(r.PID, entry)
	if err != nil {
		return err
	}
	r.Main = tmp
	if err := r.unmapStubFile(); err != nil {
		return fmt.Errorf("exec %s: stub back: %w", path, err)
	}
	ptrace.SetPC(&at, l.Entry)
	if err := r.t.SetRegs(r.PID, &at); err != nil {
		return err
	}
	if r.Main, err = r.t.NewThread(r.PID, l.Gadget); err != nil {
		return err
	}
	return nil
}

// exec injects execve(path, argv, env) into the stub and waits for its
// exec stop (the tracee needs PTRACE_O_TRACEEXEC). A failed exec returns
// to the stub's breakpoint with the error as the call's result.
func (r *restorer) exec(path string, argv, env []string) error {
	pathAddr, argvAddr, envAddr, err := r.putExecArgs(path, argv, env)
	if err != nil {
		return err
	}
	regs := r.Main.Saved
	ptrace.SetSyscall(&regs, r.Main.Gadget, unix.SYS_EXECVE, [6]uint64{pathAddr, argvAddr, envAddr})
	if err := r.t.SetRegs(r.PID, &regs); err != nil {
		return err
	}
	if err := r.t.Cont(r.PID, 0); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	for {
		st, err := r.t.WaitStop(r.PID, startTimeout)
		if err != nil {
			return fmt.Errorf("exec %s: %w", path, err)
		}
		if st.Event() == unix.PTRACE_EVENT_EXEC {
			return nil
		}
		if sig := st.Signal(); ignoredByDefault(sig) {
			// A signal that was queued to the stub (the Go runtime of a
			// container starter preempts with SIGURG) stops it before
			// the execve runs. The stub's dispositions are the defaults,
			// so delivering it would do nothing; dropping it lets the
			// call go ahead.
			r.log.Debugf("restore pid %d: %v before the exec of %s, dropped", r.PID, sig, path)
			if err := r.t.Cont(r.PID, 0); err != nil {
				return fmt.Errorf("exec %s: %w", path, err)
			}
			continue
		}
		if after, rerr := r.t.GetRegs(r.PID); rerr == nil && ptrace.SyscallResult(&after) < 0 {
			return fmt.Errorf("exec %s: %w", path, unix.Errno(-ptrace.SyscallResult(&after)))
		}
		return fmt.Errorf("exec %s: stopped with %v instead", path, st.Signal())
	}
}

// ignoredByDefault says whether sig does nothing to a process that left
// its disposition at the default.
func ignoredByDefault(sig unix.Signal) bool {
	switch sig {
	case unix.SIGCHLD, unix.SIGURG, unix.SIGWINCH, unix.SIGCONT:
		return true
	}
	return false
}

// checkStubRoom refuses an exec whose program landed on the page the
// stub's area would replace while the gadget there is in use.
func checkStubRoom(pid int, entry, base, end uint64) error {
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.Start <= entry && entry < m.End && m.Start < end && base < m.End {
			return fmt.Errorf("the program's entry point %#x lies in the restore stub's area %#x-%#x", entry, base, end)
		}
	}
	return nil
}
