package engine

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/stub"
)

const pageSize = image.PageSize

// Spawner starts restore stubs inside the job sandbox.
type Spawner interface {
	// SpawnStub starts the static executable elf as a child of the
	// sandbox's init with sandbox pid nsPID and returns its host pid. The
	// namespace's PID counter is left at after, so that no other task
	// takes a pid the restore is yet to give.
	SpawnStub(elf []byte, nsPID, after int) (hostPID int, err error)
}

// RestoreOptions says what to restore and where.
type RestoreOptions struct {
	// Gen is the generation, verified; every file the restore reads is
	// opened through it.
	Gen     *image.Generation
	Spawner Spawner
	// InitPID is the host pid of the new sandbox's init, whose namespaces
	// the job's System V IPC objects are re-created in.
	InitPID int
	// Container, when set, has the container runtime build the
	// application's container again and start the main process in it.
	Container *ContainerStart
	// NoRollback keeps files the job writes at their current length
	// instead of cutting them back to their length at checkpoint time.
	NoRollback bool
	// Strict refuses a restore when a file the job had open is not the
	// one it was (other contents) instead of warning and going on.
	Strict bool
	// Progress, when set, follows the page data into the processes: done
	// is the bytes restored so far, total those of every page file (known
	// from the image before the first byte is read). The last call of a
	// successful restore has done == total. Calls come about once per
	// 32 MiB, one at a time; Progress must return quickly.
	Progress ProgressFunc
	Log      logrus.FieldLogger
}

// RestoreResult reports a finished restore.
type RestoreResult struct {
	HostPID int // host pid of the job's main process
	NSPID   int
	// RuntimeHostPID is the host pid of the container runtime, the
	// sandbox's main process, for a container restore.
	RuntimeHostPID int
	Processes      int
	Bytes          int64
	Duration       time.Duration
}

const stubScratch = 256 << 10

// Restore re-creates the job's processes from a generation. On success the
// processes run; on failure none of them is left running.
//
// Every process is first created as a stub with its pid, parent, session
// and process group; then each is given its memory, then its files (shared
// descriptions are taken from the process that created them), then its
// signals and threads, and the capabilities the restore needed are dropped
// last. All processes are let go together.
func Restore(opts RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	m := opts.Gen.Manifest
	if len(m.Processes) == 0 {
		return nil, fmt.Errorf("restore: the image holds no process")
	}
	procs := make([]*image.Process, 0, len(m.Processes))
	for _, ref := range m.Processes {
		p, err := loadProcess(opts.Gen, ref)
		if err != nil {
			return nil, &ImageError{Generation: opts.Gen.Gen, PID: ref.PID, What: err.Error()}
		}
		procs = append(procs, p)
	}
	// Every value is checked before anything is changed: the rollback of
	// written files below already is a change.
	if err := validateImage(opts.Gen, procs); err != nil {
		return nil, err
	}
	if opts.Container == nil {
		if err := restoreLocalFiles(opts.Gen, "", opts.Log); err != nil {
			return nil, err
		}
	}
	pages := map[int]string{}
	for i, p := range procs {
		if p.State != image.ProcZombie {
			if err := preflight(p, opts, ""); err != nil {
				return nil, &node.Error{Err: fmt.Errorf("restore pid %d: %w", p.PID, err)}
			}
			pages[p.PID] = m.Processes[i].Pages
		}
	}

	t := ptrace.NewTracer()
	defer t.Close()
	// Signals that arrive while the restore runs injected calls (timers
	// re-armed, pending signals queued) stay queued for the job instead of
	// stopping the injection.
	t.HoldSignals(true)
	jr, err := newJobRestore(t, opts, procs, pages)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	err = jr.run()
	if jr.pids != nil {
		jr.pids.stop()
	}
	for _, tid := range jr.heldRuntime {
		t.Detach(tid, 0)
	}
	jr.releaseUnstopped()
	if err != nil {
		jr.killAll()
		if left := t.ReapKilled(10 * time.Second); len(left) > 0 {
			jr.log.Warnf("restore failed: threads %v of the half-restored job did not exit after SIGKILL", left)
		}
		var ne *node.Error
		if errors.As(err, &ne) {
			return nil, err
		}
		return nil, &RestoreError{Generation: opts.Gen.Gen, Err: err}
	}
	main := jr.main()
	return &RestoreResult{HostPID: main.PID, NSPID: main.proc.PID, RuntimeHostPID: jr.runtimeHost, Processes: len(procs),
		Bytes: jr.bytes, Duration: time.Since(start)}, nil
}

// RestoreError is a restore that failed after it had started the job's
// processes; they are gone again. The generation's contents are the likely
// cause: a restart may fall back to an older generation.
type RestoreError struct {
	Generation int
	Err        error
}

func (e *RestoreError) Error() string {
	return fmt.Sprintf("restore of generation %d failed: %v", e.Generation, e.Err)
}

func (e *RestoreError) Unwrap() error { return e.Err }

// loadProcess reads one process's core file.
func loadProcess(gen *image.Generation, ref image.ProcessRef) (*image.Process, error) {
	var p image.Process
	if err := gen.ReadJSON(ref.Core, &p); err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", ref.PID, err)
	}
	if p.State != image.ProcZombie && ref.Pages == "" {
		return nil, fmt.Errorf("restore pid %d: the manifest names no page file", ref.PID)
	}
	return &p, nil
}

// run performs the restore in phases across all processes, in the order
// the kernel needs: processes before their memory, memory before files
// (shared mappings and descriptors are passed between processes while
// every one still holds the restore's capabilities), threads and
// credentials last.
func (jr *jobRestore) run() error {
	t0 := time.Now()
	if err := jr.createTree(); err != nil {
		return err
	}
	jr.log.Debugf("%d processes created in %v", len(jr.procs), time.Since(t0))
	live := jr.live()
	ipc := jr.opts.Gen.Manifest.IPC
	ipcPID := jr.opts.InitPID
	if jr.opts.Container != nil {
		// The container's IPC namespace (see dumpSysVIPC's caller).
		ipcPID = ipcHolder(jr.opts.InitPID, jr.main().PID)
	}
	if ipc != nil {
		if ipcPID == 0 {
			return fmt.Errorf("restore: the image has System V IPC objects, and no sandbox to re-create them in")
		}
		if err := restoreSysVIPC(ipcPID, ipc, jr.opts.Gen); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	steps := []struct {
		name string
		do   func(r *restorer) error
	}{
		{"memory", (*restorer).restoreMemory},
		{"", func(*restorer) error {
			if ipc == nil {
				return nil
			}
			// Segments removed while attached are marked again once
			// every process has attached them.
			return finishSysVIPC(ipcPID, ipc)
		}},
		{"files", func(r *restorer) error { return jr.files.Restore(&r.Process, r.proc) }},
		{"", func(*restorer) error { return jr.files.Release() }},
		{"signals", func(r *restorer) error { return r.restoreSignals(r.proc) }},
		{"threads", func(r *restorer) error { return r.restoreThreads(r.proc) }},
		// Both need every thread: timers may target one, signals may be
		// queued for one.
		{"timers", func(r *restorer) error { return r.restorePosixTimers(r.proc) }},
		{"pending signals", func(r *restorer) error { return r.restorePending(r.proc) }},
		{"stub", (*restorer).unmapStub},
		{"release", (*restorer).release},
	}
	for _, step := range steps {
		if step.name == "" {
			if err := step.do(nil); err != nil {
				return err
			}
			continue
		}
		for _, r := range live {
			if err := step.do(r); err != nil {
				return fmt.Errorf("restore pid %d: %s: %w", r.proc.PID, step.name, err)
			}
		}
	}
	return nil
}

// restorer morphs one stub into one checkpointed process.
type restorer struct {
	inject.Process
	t      *ptrace.Tracer
	log    logrus.FieldLogger
	job    *jobRestore
	proc   *image.Process
	layout stub.Layout
	// pagesName is the process's page file in the generation.
	pagesName string
	// threads are the restored threads, in the order of proc.Threads.
	threads []*ptrace.Thread
	// progress counts the page data filled in; nil when no one follows it.
	progress *progress
}

// attach takes a freshly created stub under ptrace. The stub was started
// by the sandbox (spawned) or cloned by another stub (then it is traced
// from birth).
func (r *restorer) attach(hostPID int, spawned bool) error {
	if spawned {
		// EXITKILL: if the supervisor dies half-way, the half-built
		// process dies with it instead of running on. TRACEFORK: the
		// stub's children, cloned from it, are traced from birth.
		if err := r.t.Seize(hostPID, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK); err != nil {
			return err
		}
		if err := r.t.Interrupt(hostPID); err != nil {
			return err
		}
	} else {
		r.t.Adopt(hostPID)
	}
	if err := r.take(hostPID); err != nil {
		return err
	}
	if spawned {
		return r.unmapStubFile()
	}
	return nil
}

// take waits for the stub's stop and makes it the restorer's process.
func (r *restorer) take(hostPID int) error {
	if _, err := r.t.WaitStop(hostPID, 0); err != nil {
		return err
	}
	main, err := r.t.NewThread(hostPID, r.layout.Gadget)
	if err != nil {
		return err
	}
	r.Process = inject.Process{PID: hostPID, Main: main, Scratch: r.layout.Scratch, Size: r.layout.ScratchSize}
	return nil
}

// attachStopped takes a stub that was traced from birth and has just been
// exec'd (it is in its exec stop): the container runtime's.
func (r *restorer) attachStopped(hostPID int) error {
	r.t.Adopt(hostPID)
	if err := r.t.SetOptions(hostPID, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK); err != nil {
		return err
	}
	// Injection cannot start from the exec stop (the exec has not
	// returned yet): the stub runs into its pause loop and is stopped
	// there, as a spawned stub is.
	if err := r.t.Cont(hostPID, 0); err != nil {
		return fmt.Errorf("resume stub %d: %w", hostPID, err)
	}
	if err := r.t.Interrupt(hostPID); err != nil {
		return err
	}
	if err := r.take(hostPID); err != nil {
		return err
	}
	return r.unmapStubFile()
}

// unmapStubFile replaces the stub's file-backed code and scratch pages with
// anonymous ones holding the same code, so the stub's executable is no
// longer mapped and prctl(PR_SET_MM_MAP) may point /proc/pid/exe at the
// job's executable. The replacing mmap pulls the code page from under the
// running step; the step still ends at gadget+2, where the new page has
// the same bytes once they are written.
func (r *restorer) unmapStubFile() error {
	l := r.layout
	size := l.Scratch + l.ScratchSize - l.Base
	if _, err := r.Main.Call("mmap stub", unix.SYS_MMAP, l.Base, size, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uint64(0), 0); err != nil {
		return err
	}
	if err := r.Write(l.Base, stub.Code()); err != nil {
		return err
	}
	if _, err := r.Main.Call("mprotect stub", unix.SYS_MPROTECT, l.Base, pageSize, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return err
	}
	_, err := r.Main.Call("mprotect scratch", unix.SYS_MPROTECT, l.Scratch, l.ScratchSize, unix.PROT_READ|unix.PROT_WRITE)
	return err
}

// restoreMemory rebuilds the address space and the process-wide state that
// lives with it.
func (r *restorer) restoreMemory() error {
	p := r.proc
	mem := &memory.Restorer{P: &r.Process, Img: p, Layout: r.layout, Log: r.log, Progress: r.progress, Shmem: r.shmemFD}
	n, err := mem.Restore(r.job.opts.Gen, r.pagesName)
	if err != nil {
		return err
	}
	r.job.bytes += n
	if err := r.restoreMM(p); err != nil {
		return err
	}
	return r.restoreTask(p)
}

// stubBase finds room for the stub that no mapping of the image uses, low
// in the address space where the kernel puts nothing on its own.
func stubBase(vmas []image.VMA, size uint64) (uint64, error) {
	const lowest = 0x100000
	const highest = 0x7f0000000000
	sorted := append([]image.VMA(nil), vmas...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	cand := uint64(lowest)
	// One free page on each side keeps the stub from merging with, or
	// sitting in the guard gap of, a neighbouring mapping.
	need := size + 2*pageSize
	for _, v := range sorted {
		if v.Kind == image.VMAVsyscall {
			continue
		}
		if v.Start >= cand+need {
			break
		}
		if v.End > cand {
			cand = v.End
		}
	}
	if cand+need > highest {
		return 0, fmt.Errorf("no free address range of %d bytes for the restore stub", need)
	}
	return cand + pageSize, nil
}

// unmapStub removes the stub's code and scratch area. It is the last
// injected call: the step over it returns to an address that no longer
// exists, which is fine, because the registers are replaced before the
// thread runs again.
func (r *restorer) unmapStub() error {
	_, err := r.Main.Call("munmap stub", unix.SYS_MUNMAP, r.layout.Base, r.layout.End-r.layout.Base)
	return err
}

// release sets every thread's final registers and lets the process run; a
// process that was in a group stop is put back into it.
func (r *restorer) release() error {
	for i, th := range r.threads {
		if err := r.setFinalRegs(th, &r.proc.Threads[i]); err != nil {
			return err
		}
	}
	for _, th := range r.threads {
		sig := 0
		if th == r.Main && r.proc.State == image.ProcStopped {
			sig = int(unix.SIGSTOP)
		}
		if err := r.t.Detach(th.TID, sig); err != nil {
			return err
		}
	}
	return nil
}
