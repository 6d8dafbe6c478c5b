package engine

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fds"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
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
	// PagesUnverified says the checksums of the generation's own page
	// files were not verified (Generation.VerifyRestorable): the restore
	// verifies them as it reads them, before any process of the job runs.
	PagesUnverified bool
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
	// HostPIDs maps each restored process's pid in the job to its host pid.
	HostPIDs map[int]int
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
		jr.files.Abandon()
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
	hostPIDs := map[int]int{}
	for _, r := range jr.procs {
		hostPIDs[r.proc.PID] = r.PID
	}
	return &RestoreResult{HostPID: main.PID, NSPID: main.proc.PID, RuntimeHostPID: jr.runtimeHost, Processes: len(procs),
		Bytes: jr.bytes, Duration: time.Since(start), HostPIDs: hostPIDs}, nil
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

// loadProcess reads one process's core file and page runs.
func loadProcess(gen *image.Generation, ref image.ProcessRef) (*image.Process, error) {
	p, err := gen.ReadProcess(ref)
	if err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", ref.PID, err)
	}
	if p.State != image.ProcZombie && ref.Pages == "" {
		return nil, fmt.Errorf("restore pid %d: the manifest names no page file", ref.PID)
	}
	return p, nil
}

// jobRestore is the restore of a whole job: its processes, and what they
// hand each other (open file descriptions, shared memory).
type jobRestore struct {
	t     *ptrace.Tracer
	opts  RestoreOptions
	log   logrus.FieldLogger
	elf   []byte
	procs []*restorer // in image order: parents before children
	byPID map[int]*restorer
	// files restores the descriptors, and holds the open file
	// descriptions and shared memory objects passed between processes.
	files *fds.Restorer
	// shmemSize is the size each shared memory object is given.
	shmemSize map[string]uint64
	bytes     int64
	layout    stub.Layout
	// outer is the recorded pid of the main process's parent, a process
	// outside the image: the sandbox init, or the container runtime.
	outer int
	// maxPID is the highest pid or tid of the image.
	maxPID int
	// pids sets the PID counter for stubs that cannot pick their pids
	// (a container's, or any on a kernel without clone3 set_tid); nil
	// where clone3 with set_tid does.
	pids *pidWriter
	// runtimeHost is the host pid of the container runtime;
	// heldRuntime its tasks kept stopped while the restore runs.
	runtimeHost int
	heldRuntime []int
	// runtimeUnstopped are runtime tasks asked to stop that had not:
	// a vfork parent whose child is held waits until it is let go.
	runtimeUnstopped []int
	// progress counts the page data restored, for opts.Progress.
	progress *progress
}

func newJobRestore(t *ptrace.Tracer, opts RestoreOptions, procs []*image.Process, pages map[int]string) (*jobRestore, error) {
	jr := &jobRestore{t: t, opts: opts, log: opts.Log, byPID: map[int]*restorer{},
		shmemSize: map[string]uint64{},
		progress:  newProgress(opts.Progress)}
	// One stub layout for all: a child is cloned from its parent's stub
	// and inherits its layout, so the stub must sit where no process of
	// the job has a mapping.
	var all []image.VMA
	for _, p := range procs {
		all = append(all, p.VMAs...)
		for _, v := range p.VMAs {
			if v.Shmem != "" {
				jr.shmemSize[v.Shmem] = max(jr.shmemSize[v.Shmem], v.Offset+v.End-v.Start)
			}
		}
	}
	files, err := fds.NewRestorer(opts.Gen, procs)
	if err != nil {
		return nil, err
	}
	jr.files = files
	base, err := stubBase(all, stub.Size(stubScratch))
	if err != nil {
		return nil, err
	}
	elf, layout := stub.Build(base, stubScratch)
	jr.elf, jr.layout = elf, layout
	jr.outer = initPID
	for _, p := range procs {
		for _, th := range p.Threads {
			jr.maxPID = max(jr.maxPID, th.TID)
		}
		jr.maxPID = max(jr.maxPID, p.PID)
		if jr.byPID[p.PID] != nil {
			return nil, fmt.Errorf("pid %d appears twice in the image", p.PID)
		}
		r := &restorer{t: t, log: opts.Log, job: jr, proc: p, layout: layout, pagesName: pages[p.PID], progress: jr.progress}
		if pages[p.PID] != "" {
			jr.progress.expect(memory.RunBytes(p))
		}
		jr.procs = append(jr.procs, r)
		jr.byPID[p.PID] = r
	}
	return jr, nil
}

// live returns the processes that run on after the restore.
func (jr *jobRestore) live() []*restorer {
	var out []*restorer
	for _, r := range jr.procs {
		if r.proc.State != image.ProcZombie {
			out = append(out, r)
		}
	}
	return out
}

// main is the job's main process, the first one the sandbox starts: the one
// the image names, else the first child of init in it.
func (jr *jobRestore) main() *restorer {
	if r := jr.byPID[jr.opts.Gen.Manifest.Job.MainPID]; r != nil {
		return r
	}
	for _, r := range jr.procs {
		if r.proc.PPID == jr.outer && r.proc.State != image.ProcZombie {
			return r
		}
	}
	return jr.procs[0]
}

// killAll ends every process created so far.
func (jr *jobRestore) killAll() {
	for _, r := range jr.procs {
		if r.PID != 0 {
			unix.Kill(r.PID, unix.SIGKILL)
		}
	}
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

// shmemFD returns a descriptor in r for the shared memory object behind v,
// creating the object (as a memfd) in the first process that maps it. The
// caller closes it after mapping.
func (r *restorer) shmemFD(v *image.VMA) (uint64, error) {
	jr := r.job
	if h, ok := jr.files.Shmem(v.Shmem); ok {
		return jr.files.Fetch(&r.Process, h)
	}
	name := strings.TrimSuffix(strings.TrimPrefix(v.Name, "/memfd:"), " (deleted)")
	name = strings.TrimPrefix(name, "/")
	if len(name) > 240 || name == "" {
		name = "shmem"
	}
	addr, err := r.PutString(0, name)
	if err != nil {
		return 0, err
	}
	// Sealing allowed: a descriptor of the same memfd may bring seals.
	fd, err := r.Main.Call("memfd_create", unix.SYS_MEMFD_CREATE, addr, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return 0, err
	}
	if _, err := r.Main.Call("ftruncate", unix.SYS_FTRUNCATE, fd, jr.shmemSize[v.Shmem]); err != nil {
		return 0, err
	}
	h, err := jr.files.KeepHigh(&r.Process, r.proc, fd)
	if err != nil {
		return 0, err
	}
	jr.files.SetShmem(v.Shmem, h)
	return jr.files.Fetch(&r.Process, h)
}
