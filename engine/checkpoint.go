package engine

import (
	"fmt"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// CheckpointOptions says what to dump and where.
type CheckpointOptions struct {
	// InitPID is the host pid of the sandbox init; the job is everything
	// below it.
	InitPID int
	// Freezer freezes the job cgroup; nil means ptrace-only.
	Freezer Freezer
	// Writer receives the generation's data files; Manifest is filled in
	// with the processes and figures. Commit makes the generation durable.
	Writer   *image.Writer
	Manifest *image.Manifest
	Commit   func() error
	// Stdio names the supervisor, whose standard streams the job shares.
	Stdio Stdio
	// Kill ends the job once the generation is committed.
	Kill bool
	Log  logrus.FieldLogger
}

// Checkpoint stops the job, dumps it, and lets it run on (or kills it, once
// the image is safely on disk). If anything fails the job is left running.
func Checkpoint(opts CheckpointOptions) (*image.Stats, error) {
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	start := time.Now()
	t := ptrace.NewTracer()
	defer t.Close()

	job, err := stopJob(t, opts.InitPID, opts.Freezer, opts.Log)
	if err != nil {
		return nil, err
	}
	stopped := time.Now()
	opts.Log.Debugf("job stopped (%s): pid %d, %d threads", job.method, job.pid, len(job.threads))

	p, pageBytes, err := dumpProcess(t, job, opts)
	if err != nil {
		job.release()
		return nil, err
	}
	stats := &image.Stats{
		PageBytes:    pageBytes,
		Threads:      len(p.Threads),
		Processes:    1,
		FreezeMethod: job.method,
		FrozenFor:    job.frozen,
	}
	if !opts.Kill {
		// The data is complete: the job may run while it is made
		// durable.
		job.release()
		stats.StoppedFor = time.Since(stopped)
		if err := opts.Commit(); err != nil {
			return nil, err
		}
	} else {
		if err := opts.Commit(); err != nil {
			job.release()
			return nil, fmt.Errorf("%w; the job keeps running", err)
		}
		job.kill()
		stats.StoppedFor = time.Since(stopped)
	}
	stats.Duration = time.Since(start)
	return stats, nil
}

// dumpProcess writes one stopped process's page file and core file and
// records it in the manifest.
func dumpProcess(t *ptrace.Tracer, job *stoppedJob, opts CheckpointOptions) (*image.Process, int64, error) {
	hostPID := job.pid
	st, err := proc.ReadStatus(strconv.Itoa(hostPID))
	if err != nil {
		return nil, 0, err
	}
	p := &image.Process{}
	if p.PID, err = st.NSPid(); err != nil {
		return nil, 0, err
	}
	stat, err := proc.ReadStat(hostPID)
	if err != nil {
		return nil, 0, err
	}
	p.Comm = stat.Comm
	if p.PPID, err = nsPidOf(stat.PPID); err != nil {
		return nil, 0, err
	}
	p.PGID, p.SID = lastInt(st, "NSpgid"), lastInt(st, "NSsid")

	early, err := proc.ReadMaps(hostPID)
	if err != nil {
		return nil, 0, err
	}
	var vdsoVMAs []image.VMA
	for i := range early {
		if early[i].Path == "[vdso]" {
			vdsoVMAs = append(vdsoVMAs, image.VMA{Start: early[i].Start, End: early[i].End, Kind: image.VMAVDSO})
		}
	}
	vdso, gadget, err := dumpVDSO(hostPID, vdsoVMAs)
	if err != nil {
		return nil, 0, err
	}
	p.VDSO = vdso

	if err := dumpWithScratch(t, job, gadget, p); err != nil {
		return nil, 0, err
	}

	// The address space, as it is with the scratch area gone again.
	if p.VMAs, err = dumpVMAs(hostPID); err != nil {
		return nil, 0, err
	}
	if err := dumpFiles(hostPID, p, opts.Stdio); err != nil {
		return nil, 0, err
	}
	pages, err := opts.Writer.Create(image.PagesName(p.PID))
	if err != nil {
		return nil, 0, err
	}
	d, err := newPageDumper(hostPID, pages)
	if err != nil {
		pages.Close()
		return nil, 0, err
	}
	t0 := time.Now()
	derr := d.dump(p.VMAs)
	t1 := time.Now()
	werr := d.close()
	cerr := pages.Close()
	opts.Log.Debugf("pid %d: read pages in %v, wrote %d bytes by %v", p.PID, t1.Sub(t0), d.bytes, time.Since(t0))
	for _, e := range []error{derr, werr, cerr} {
		if e != nil {
			return nil, 0, fmt.Errorf("pid %d: memory: %w", p.PID, e)
		}
	}
	p.PageRuns = d.runs
	if err := opts.Writer.WriteJSON(image.CoreName(p.PID), p); err != nil {
		return nil, 0, err
	}
	opts.Manifest.Processes = append(opts.Manifest.Processes, image.ProcessRef{
		PID: p.PID, PPID: p.PPID, Comm: p.Comm,
		Core: image.CoreName(p.PID), Pages: image.PagesName(p.PID),
	})
	return p, d.bytes, nil
}

const dumpScratchSize = 64 << 10

// dumpWithScratch maps a scratch page into the stopped process, runs the
// injected queries that need memory for their results (signal handlers,
// timers, brk, per-thread signal stacks and tid addresses), and unmaps it.
// Every thread's registers are put back afterwards.
func dumpWithScratch(t *ptrace.Tracer, job *stoppedJob, gadget uint64, p *image.Process) (err error) {
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
	rem := &remote{pid: job.pid, main: main, scratch: addr, size: dumpScratchSize}
	defer func() {
		if _, uerr := main.Call("munmap scratch", unix.SYS_MUNMAP, addr, dumpScratchSize); uerr != nil && err == nil {
			err = uerr
		}
	}()
	for _, th := range threads {
		ts, err := dumpThread(t, rem, th, job.pid)
		if err != nil {
			return fmt.Errorf("pid %d: %w", p.PID, err)
		}
		p.Threads = append(p.Threads, ts)
	}
	if err := dumpTask(rem, job.pid, p); err != nil {
		return err
	}
	return dumpSignals(rem, job.pid, p)
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
