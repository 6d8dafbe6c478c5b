package engine

import (
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fds"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

// CheckpointOptions says what to dump and where.
type CheckpointOptions struct {
	// InitPID is the host pid of the sandbox init; the job is everything
	// below it.
	InitPID int
	// MainPID is the host pid of the job's main process, the one whose
	// exit ends the job; the restore makes the same process the main one.
	MainPID int
	// App, when set, limits the dump to a container's application; the
	// container runtime stays out of the image and runs on (Freezer is
	// then the application's own cgroup).
	App *AppScope
	// Freezer freezes the job cgroup; nil means ptrace-only.
	Freezer Freezer
	// Writer receives the generation's data files; Manifest is filled in
	// with the processes and figures. Commit makes the generation durable.
	Writer   *image.Writer
	Manifest *image.Manifest
	Commit   func() error
	// Stopped, when set, runs once every thread of the job is stopped and
	// before any of it runs again (the supervisor reads the job's clocks
	// there, so they never run backwards for it across a restart).
	Stopped func()
	// Stdio names the supervisor, whose standard streams the job shares.
	Stdio fds.Stdio
	// Kill ends the job once the generation is committed.
	Kill bool
	// BufferBytes bounds the page data held in memory so the job can be
	// released before the disk has caught up; negative picks the default
	// (memory.DefaultBuffer), 0 streams to disk while the job waits.
	BufferBytes int64
	// Progress, when set, follows the job's memory through the dump:
	// done is the bytes of memory read and dealt with (written to the page
	// files, found unchanged or all zero) so far, total the bytes
	// expected. total is an estimate (from the kernel's counters of
	// anonymous memory) until every process's memory has been read, then
	// exact (Stats.MemoryBytes); done never exceeds it, and on success the
	// last call has done == total. Calls come about once per 32 MiB, from the
	// engine's writer goroutines but one at a time; Progress must return
	// quickly (it holds up the writer that calls it).
	Progress ProgressFunc
	// OnRelease, when set, is called just before the job is let run again
	// while the generation is still being written (not with Kill).
	OnRelease func()
	// LocalLimit bounds the node-local file data saved (see
	// localfiles.go); 0 picks DefaultLocalLimit.
	LocalLimit int64
	// Incremental keeps the checksum of every page (image.PageSumsName),
	// so that a later generation can be written incrementally on this
	// one. Parent, when set, is the generation this one is compared with:
	// pages that did not change since are not written again, their runs
	// read the data of the generation that holds it, if that is MinRefGen
	// or newer (older data, which retention is about to let go, is
	// written again).
	Incremental bool
	Parent      *image.Generation
	MinRefGen   int
	// Tracker tells the pages the job wrote since it was last armed (soft-
	// dirty bits or userfaultfd write-protection); nil without. TrustWrites
	// says it was armed when Parent was dumped, and not since: pages of
	// private mappings it shows unchanged are not read
	// (memory.Parent.Written). ArmWrites arms it after each process's pages
	// are read, so that the next generation may trust it (Stats.WritesArmed
	// says whether that worked for every process).
	Tracker     *writetrack.Tracker
	TrustWrites bool
	ArmWrites   bool
	// PreCopy copies the job's memory to disk while it runs, before it is
	// stopped (see precopy.go); a checkpoint that ends the job (Kill)
	// takes none.
	PreCopy bool
	// Compress is how page files are encoded: image.CodecZstd, or "" to
	// store the page data as it is.
	Compress string
	Log      logrus.FieldLogger
}

// Checkpoint stops the job, dumps it, and lets it run on (or kills it, once
// the image is safely on disk). If anything fails the job is left running.
//
// The job is stopped only while its state is read: page data goes into
// memory buffers (up to BufferBytes) and is written out after the job has
// been released; the generation is committed once everything is written.
func Checkpoint(opts CheckpointOptions) (*image.Stats, error) {
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	if opts.BufferBytes < 0 {
		opts.BufferBytes = memory.DefaultBuffer()
	}
	var stats *image.Stats
	err := ptrace.Run(func(t *ptrace.Tracer) (err error) {
		stats, err = checkpoint(t, opts)
		return err
	})
	return stats, err
}

// checkpoint is Checkpoint on the tracer's thread.
func checkpoint(t *ptrace.Tracer, opts CheckpointOptions) (*image.Stats, error) {
	start := time.Now()
	var pre map[int]*precopied
	if opts.PreCopy && !opts.Kill {
		var err error
		if pre, err = precopyJob(opts, opts.ArmWrites); err != nil {
			return nil, err
		}
		// The pre-copy armed write tracking again: from here on it says
		// what changed since the pre-copy, not since the parent.
		opts.TrustWrites = false
	}
	defer dropAll(opts.Writer, pre)
	job, err := stopJob(t, opts.InitPID, opts.App, opts.Freezer, opts.Log)
	if err != nil {
		return nil, err
	}
	stopped := time.Now()
	opts.Log.Debugf("job stopped (%s): %d processes, %d threads", job.method, len(job.procs), job.threadCount())
	if opts.Stopped != nil {
		opts.Stopped()
	}

	if opts.Tracker != nil {
		// The userfaultfds of processes that have gone are let go.
		alive := map[int]bool{}
		for _, sp := range job.live() {
			alive[sp.pid] = true
		}
		opts.Tracker.Keep(alive)
	}
	jd := newJobDump(opts)
	jd.pre = pre
	if jd.progress != nil {
		for _, sp := range job.live() {
			jd.progress.guessProcess(sp.pid, guessPageBytes(sp.pid))
		}
	}
	dumps, err := jd.dumpAll(t, job)
	if err != nil {
		job.release()
		return nil, err
	}
	stats := &image.Stats{
		Processes:    len(dumps),
		FreezeMethod: job.method,
		FrozenFor:    job.frozen,
		WritesArmed:  opts.ArmWrites && !jd.armFailed,
	}
	for _, d := range dumps {
		stats.Threads += len(d.proc.Threads)
	}
	finishAll := func() error {
		// Pre-copies of processes that exited before the stop.
		dropAll(opts.Writer, jd.pre)
		var first error
		for _, d := range dumps {
			if err := d.finish(opts); err != nil && first == nil {
				first = err
			}
			if d.pages != nil {
				stats.PageBytes += d.pages.Bytes() + int64(d.preBytes)
				stats.PreCopyBytes += int64(d.preBytes)
				stats.CompressedBytes += d.file.stored()
				stats.MemoryBytes += d.pages.Read()
				stats.UnreadBytes += d.pages.CleanBytes()
				for _, run := range d.proc.PageRuns {
					if run.Generation != 0 {
						stats.RefBytes += int64(run.Pages * image.PageSize)
					}
				}
			}
		}
		// The manifest keeps the figures as they are at commit time
		// (inspect shows them).
		if opts.Manifest != nil {
			procs := make([]*image.Process, 0, len(dumps))
			for _, d := range dumps {
				procs = append(procs, d.proc)
			}
			opts.Manifest.Requires = requirements(opts.Manifest, procs)
			if err := recordRefs(opts.Manifest, opts.Parent, procs); err != nil && first == nil {
				first = err
			}
			opts.Manifest.Stats = *stats
			opts.Manifest.Stats.Duration = time.Since(start)
			if opts.Manifest.Stats.StoppedFor == 0 {
				opts.Manifest.Stats.StoppedFor = time.Since(stopped)
			}
		}
		return first
	}
	if !opts.Kill {
		// Everything the job can change has been read: it may run while
		// the data is written and made durable.
		if opts.OnRelease != nil {
			opts.OnRelease()
		}
		job.release()
		stats.StoppedFor = time.Since(stopped)
		if err := finishAll(); err != nil {
			return nil, err
		}
		written := time.Now()
		if err := opts.Commit(); err != nil {
			return nil, err
		}
		opts.Log.Debugf("data written %v after the job was released, committed in %v", written.Sub(stopped)-stats.StoppedFor, time.Since(written))
	} else {
		err := finishAll()
		if err == nil {
			err = opts.Commit()
		}
		if err != nil {
			job.release()
			return nil, fmt.Errorf("%w; the job keeps running", err)
		}
		job.kill()
		stats.StoppedFor = time.Since(stopped)
	}
	stats.Duration = time.Since(start)
	opts.Log.Debugf("%d bytes of pages, job stopped %v, written by %v", stats.PageBytes, stats.StoppedFor, time.Since(start))
	return stats, nil
}

// jobDump holds what the dump of one process needs to know about the
// others: which open file descriptions, pipes and shared memory objects are
// already in the image.
type jobDump struct {
	opts CheckpointOptions
	// files dumps the processes' descriptors.
	files *fds.Dumper
	// shmem records, per shared memory object, the pages already dumped.
	shmem *memory.Shared
	// buffered is the page data held in memory so far, against
	// opts.BufferBytes.
	buffered int64
	// progress counts the page data for opts.Progress; nil without it.
	progress *progress
	// local saves the node-local files the job has.
	local *localSaver
	// armFailed is set when write tracking could not be armed on a
	// process.
	armFailed bool
	// pre are the pre-copies not yet used, by sandbox pid.
	pre map[int]*precopied
}

func newJobDump(opts CheckpointOptions) *jobDump {
	return &jobDump{
		opts:     opts,
		files:    fds.NewDumper(fds.DumpOptions{Writer: opts.Writer, Stdio: opts.Stdio, Container: opts.App != nil}),
		shmem:    memory.NewShared(),
		progress: newProgress(opts.Progress),
		local:    newLocalSaver(opts.LocalLimit),
	}
}

// dumpAll dumps every process of the stopped job, parents first. On error
// the page files already started are closed and nothing is committed.
func (jd *jobDump) dumpAll(t *ptrace.Tracer, job *stoppedJob) ([]*processDump, error) {
	if err := checkSharedMM(job); err != nil {
		return nil, err
	}
	defer jd.files.Close()
	var dumps []*processDump
	fail := func(err error) ([]*processDump, error) {
		for _, d := range dumps {
			d.finish(jd.opts)
		}
		return nil, err
	}
	for _, sp := range job.procs {
		if sp.zombie {
			p, err := processIDs(sp.pid)
			if err != nil {
				return fail(err)
			}
			if p.State != image.ProcZombie {
				return fail(fmt.Errorf("pid %d: neither stopped nor a zombie", p.PID))
			}
			dumps = append(dumps, &processDump{proc: p})
			continue
		}
		d, err := jd.dumpProcess(t, sp)
		if err != nil {
			return fail(err)
		}
		if sp.pid == jd.opts.MainPID {
			jd.opts.Manifest.Job.MainPID = d.proc.PID
		}
		dumps = append(dumps, d)
	}
	var procs []*image.Process
	for _, d := range dumps {
		procs = append(procs, d.proc)
	}
	if err := jd.files.CheckPeers(procs); err != nil {
		return fail(err)
	}
	// A container's application may have an IPC namespace of its own
	// (Apptainer's --ipc, --containall): its objects are there.
	ipcPID := jd.opts.InitPID
	if jd.opts.App != nil {
		ipcPID = ipcHolder(jd.opts.InitPID, jd.opts.MainPID)
	}
	ipc, err := dumpSysVIPC(ipcPID, jd.opts.Writer)
	if err != nil {
		return fail(err)
	}
	jd.opts.Manifest.IPC = ipc
	return dumps, nil
}

// checkSharedMM refuses processes that share one address space without
// being threads of one process (vfork children before their exec,
// clone(CLONE_VM) without CLONE_THREAD): they cannot be re-created.
func checkSharedMM(job *stoppedJob) error {
	live := job.live()
	for i, a := range live {
		for _, b := range live[i+1:] {
			if sameVM(a.pid, b.pid) {
				return fmt.Errorf("host pids %d and %d share one address space (vfork before exec, or clone with CLONE_VM): not supported; checkpoint again in a moment", a.pid, b.pid)
			}
		}
	}
	return nil
}

// processDump is one process whose state has been read; its page data may
// still be on its way to disk.
type processDump struct {
	proc  *image.Process
	pages *memory.Dumper // nil for a zombie
	file  *pageFile
	// sums receives the page checksums (Incremental); parent is the
	// parent's checksum file being read. Either may be nil.
	sums   *image.DataFile
	parent *os.File
	// pre is the pre-copy the dump went on from, nil without one;
	// preBytes what it wrote.
	pre      *precopied
	preBytes uint64
}

// finish waits for the page data, closes the page file and writes the core
// file and the manifest entry.
func (d *processDump) finish(opts CheckpointOptions) error {
	p := d.proc
	ref := image.ProcessRef{PID: p.PID, PPID: p.PPID, Comm: p.Comm}
	if d.parent != nil {
		defer d.parent.Close()
	}
	if d.pre != nil {
		defer d.pre.release()
	}
	if d.pages != nil {
		werr := d.pages.Close()
		cerr := d.file.Close()
		var serr error
		if d.sums != nil {
			serr = d.sums.Close()
		}
		for _, e := range []error{werr, cerr, serr} {
			if e != nil {
				return fmt.Errorf("pid %d: memory: %w", d.proc.PID, e)
			}
		}
		p.PageRuns = d.pages.Runs()
		for i := range p.PageRuns {
			// Pre-copied pages are this generation's own.
			if p.PageRuns[i].Generation == opts.Writer.Gen {
				p.PageRuns[i].Generation = 0
			}
		}
		ref.Pages = image.PagesName(p.PID)
	}
	if err := opts.Writer.WriteProcess(p, &ref); err != nil {
		return err
	}
	opts.Manifest.Processes = append(opts.Manifest.Processes, ref)
	return nil
}

// dumpProcess reads everything of one stopped process: its state into an
// image.Process, its pages into the dumper's buffers.
func (jd *jobDump) dumpProcess(t *ptrace.Tracer, sp *stoppedProc) (*processDump, error) {
	hostPID := sp.pid
	p, err := processIDs(hostPID)
	if err != nil {
		return nil, err
	}
	if sp.stopSig != 0 {
		p.State = image.ProcStopped
	}

	early, err := proc.ReadMaps(hostPID)
	if err != nil {
		return nil, err
	}
	var vdsoVMAs []image.VMA
	for i := range early {
		if early[i].Path == "[vdso]" {
			vdsoVMAs = append(vdsoVMAs, image.VMA{Start: early[i].Start, End: early[i].End, Kind: image.VMAVDSO})
		}
	}
	vdso, gadget, err := memory.ReadVDSO(hostPID, vdsoVMAs)
	if err != nil {
		return nil, err
	}
	p.VDSO = vdso

	// The descriptors are read while the process can run injected calls:
	// without pidfd_getfd, that is how a socket's queue is reached.
	files := func(rem *inject.Process) error {
		if err := jd.files.Dump(rem, p); err != nil {
			return err
		}
		if jd.opts.ArmWrites && jd.opts.Tracker.NeedsFD(hostPID) {
			// After the descriptors were read: the userfaultfd made
			// in the process is no part of the job.
			if err := adoptUffd(rem, jd.opts.Tracker, hostPID); err != nil {
				jd.opts.Log.Debugf("pid %d: %v: its pages are compared by content", p.PID, err)
			}
		}
		return nil
	}
	if err := dumpWithScratch(t, sp, gadget, p, files); err != nil {
		return nil, err
	}

	// The address space, as it is with the scratch area gone again.
	if p.VMAs, err = memory.ReadVMAs(hostPID); err != nil {
		return nil, err
	}
	if p.Exe.Path == "" {
		if err := exeFromCode(hostPID, p); err != nil {
			return nil, err
		}
	}
	if err := jd.saveLocalFiles(hostPID, p); err != nil {
		return nil, err
	}
	d := &processDump{proc: p}
	opts := memory.DumperOptions{
		Buffer:   max(0, jd.opts.BufferBytes-jd.buffered),
		Shared:   jd.shmem,
		Progress: jd.progress,
	}
	abandon := func(err error) (*processDump, error) {
		if d.file != nil {
			d.file.Close()
		}
		if d.sums != nil {
			d.sums.Close()
		}
		if d.parent != nil {
			d.parent.Close()
		}
		if d.pre != nil {
			d.pre.release()
		}
		return nil, err
	}
	if d.pre = jd.samePrecopy(p.PID, hostPID); d.pre != nil {
		d.file, opts.Offset, d.preBytes = d.pre.file, d.pre.off, d.pre.off
		if opts.Parent, err = d.pre.parent(jd.opts.MinRefGen, jd.opts.Tracker); err != nil {
			return abandon(err)
		}
	} else {
		if d.file, err = createPageFile(jd.opts, p.PID); err != nil {
			return abandon(err)
		}
		if opts.Parent, d.parent, err = parentPages(jd.opts.Parent, p.PID, jd.opts.MinRefGen); err != nil {
			return abandon(err)
		}
		if opts.Parent != nil && jd.opts.TrustWrites {
			opts.Parent.Written = jd.opts.Tracker.Method()
		}
	}
	if jd.opts.Incremental {
		if d.sums, err = jd.opts.Writer.Create(image.PageSumsName(p.PID)); err != nil {
			return abandon(err)
		}
		opts.Sums = d.sums
	}
	if d.pages, err = memory.NewDumper(hostPID, d.file.sink(), opts); err != nil {
		return abandon(err)
	}
	if err := d.pages.Dump(p.VMAs); err != nil {
		d.finish(jd.opts)
		return nil, fmt.Errorf("pid %d: memory: %w", p.PID, err)
	}
	jd.buffered += d.pages.Buffered()
	jd.progress.settle(hostPID, d.pages.Read())
	if jd.opts.ArmWrites {
		// The pages were read (or queued) as they are now: what the job
		// writes from here on is the next generation's.
		if err := jd.opts.Tracker.Arm(hostPID, trackedRanges(p.VMAs), rereadRanges(p.VMAs, d.pages.ReadRanges())); err != nil {
			jd.opts.Log.Debugf("pid %d: %v: the next checkpoint compares every page", p.PID, err)
			jd.armFailed = true
		}
	}
	return d, nil
}

const dumpScratchSize = 64 << 10

// dumpWithScratch maps a scratch page into the stopped process, runs the
// injected queries that need memory for their results (signal handlers,
// timers, brk, per-thread signal stacks and tid addresses), then also
// (when not nil) with the process ready for injected calls, and unmaps the
// page. Every thread's registers are put back afterwards.
func dumpWithScratch(t *ptrace.Tracer, job *stoppedProc, gadget uint64, p *image.Process, also func(rem *inject.Process) error) (err error) {
	var threads []*ptrace.Thread
	for _, tid := range job.threads {
		th, err := t.NewThread(tid, gadget)
		if err != nil {
			return err
		}
		threads = append(threads, th)
	}
	main := threads[0]
	defer func() {
		for _, th := range threads {
			if rerr := th.Restore(); rerr != nil && err == nil {
				err = rerr
			}
			for _, sig := range th.Deferred {
				unix.Tgkill(job.pid, th.TID, sig)
			}
		}
	}()
	addr, err := main.Call("mmap scratch", unix.SYS_MMAP, 0, dumpScratchSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("pid %d: %w", p.PID, err)
	}
	rem := &inject.Process{PID: job.pid, Main: main, Scratch: addr, Size: dumpScratchSize}
	defer func() {
		if _, uerr := main.Call("munmap scratch", unix.SYS_MUNMAP, addr, dumpScratchSize); uerr != nil && err == nil {
			err = uerr
		}
	}()
	rseq := &rseqFinder{rem: rem, hostPID: job.pid}
	for _, th := range threads {
		ts, err := dumpThread(t, rem, th, job.pid, rseq)
		if err != nil {
			return fmt.Errorf("pid %d: %w", p.PID, err)
		}
		p.Threads = append(p.Threads, ts)
	}
	if err := dumpTask(rem, job.pid, p); err != nil {
		return err
	}
	if err := dumpSignals(rem, job.pid, p); err != nil {
		return err
	}
	if also != nil {
		return also(rem)
	}
	return nil
}
