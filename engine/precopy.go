package engine

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

// A pre-copy takes the job's memory to disk while the job runs, before it
// is stopped: the page file of each process is written with everything, as
// the process changes it under the copy, together with each page's
// checksum. The dump of the stopped job then compares every page with what
// the pre-copy wrote (by checksum, or where the kernel tracks soft-dirty
// bits, which the pre-copy cleared before it read, by those) and writes
// only the pages that changed meanwhile, after the pre-copied ones in the
// same file. The job is stopped for reading and comparing its memory, or
// with soft-dirty bits for reading what it wrote during the pre-copy,
// instead of for writing all of it to disk.

// precopied is one process's memory copied while the job ran.
type precopied struct {
	hostPID int
	// file is the process's page file, still open for the rest; off is
	// how much the pre-copy wrote of it.
	file *pageFile
	off  uint64
	// runs are the pre-copied pages, their Generation set (this
	// generation's number for the pages written here); sums their
	// checksums, in a scratch file removed once the dump is done.
	runs []image.PageRun
	sums *os.File
	// armed says write tracking was armed on the process before its
	// memory was read: a page it shows unchanged is the pre-copy's.
	armed bool
}

// release removes the scratch file of checksums.
func (pc *precopied) release() {
	if pc.sums != nil {
		pc.sums.Close()
		os.Remove(pc.sums.Name())
		pc.sums = nil
	}
}

// parent is the pre-copy as the parent of the dump of the stopped process.
func (pc *precopied) parent(minGen int, t *writetrack.Tracker) (*memory.Parent, error) {
	written := writetrack.None
	if pc.armed {
		written = t.Method()
	}
	if _, err := pc.sums.Seek(0, 0); err != nil {
		return nil, fmt.Errorf("pre-copied page checksums: %w", err)
	}
	return &memory.Parent{Runs: pc.runs, Sums: pc.sums, MinGen: minGen, Written: written}, nil
}

// precopyJob copies the memory of every process of the running job into
// the generation's page files, by sandbox pid. A process that cannot be
// pre-copied (it exits meanwhile) is left to the dump of the stopped job;
// only a failure to write the generation is an error.
func precopyJob(opts CheckpointOptions, arm bool) (map[int]*precopied, error) {
	start := time.Now()
	out := map[int]*precopied{}
	pids, err := JobPIDs(opts.InitPID, opts.App)
	if err != nil {
		return nil, err
	}
	var bytes int64
	for _, hostPID := range pids {
		p, err := processIDs(hostPID)
		if err != nil || p.State == image.ProcZombie {
			continue
		}
		pc, n, err := precopyProcess(opts, hostPID, p.PID, arm)
		if err != nil {
			dropAll(opts.Writer, out)
			return nil, err
		}
		if pc != nil {
			out[p.PID] = pc
			bytes += n
		}
	}
	opts.Log.Debugf("pre-copy: %d processes, %d bytes written while the job ran, in %v", len(out), bytes, time.Since(start))
	return out, nil
}

// precopyProcess copies one process's memory; nil when it went away.
func precopyProcess(opts CheckpointOptions, hostPID, pid int, arm bool) (*precopied, int64, error) {
	pc := &precopied{hostPID: hostPID}
	vmas, err := memory.ReadVMAs(hostPID)
	if err != nil {
		return nil, 0, nil
	}
	// Armed before anything is read: whatever the process writes from
	// here on, the dump of the stopped process reads again. A mapping
	// made after the list was read is not armed, and reads as written.
	if arm {
		mappings := trackedRanges(vmas)
		if err := opts.Tracker.Arm(hostPID, mappings, mappings); err != nil {
			opts.Log.Debugf("pre-copy of pid %d: %v", pid, err)
		} else {
			pc.armed = true
		}
	}
	parent, parentSums, err := parentPages(opts.Parent, pid, opts.MinRefGen)
	if err != nil {
		return nil, 0, err
	}
	if parentSums != nil {
		defer parentSums.Close()
	}
	if pc.file, err = createPageFile(opts, pid); err != nil {
		return nil, 0, err
	}
	if pc.sums, err = os.CreateTemp(opts.Writer.Dir, "precopy-sums-"); err != nil {
		pc.file.drop(opts.Writer)
		return nil, 0, fmt.Errorf("pre-copy of pid %d: %w", pid, err)
	}
	sums := bufio.NewWriterSize(pc.sums, 1<<16)
	d, err := memory.NewDumper(hostPID, pc.file.sink(), memory.DumperOptions{Buffer: 0, Parent: parent, Sums: sums, Running: true})
	if err != nil {
		pc.drop(opts.Writer)
		return nil, 0, nil
	}
	derr := d.Dump(vmas)
	cerr := d.Close()
	if cerr == nil {
		cerr = sums.Flush()
	}
	if cerr != nil {
		// The disk, not the process.
		pc.drop(opts.Writer)
		return nil, 0, fmt.Errorf("pre-copy of pid %d: %w", pid, cerr)
	}
	if derr != nil {
		// The process exited or exec'd under the copy.
		opts.Log.Debugf("pre-copy of pid %d given up: %v", pid, derr)
		pc.drop(opts.Writer)
		return nil, 0, nil
	}
	pc.off, pc.runs = uint64(d.Bytes()), d.Runs()
	for i := range pc.runs {
		if pc.runs[i].Generation == 0 {
			pc.runs[i].Generation = opts.Writer.Gen
		}
	}
	return pc, d.Bytes(), nil
}

// drop discards a pre-copy that will not be used: its page file goes from
// the generation.
func (pc *precopied) drop(w *image.Writer) {
	pc.release()
	if pc.file != nil {
		pc.file.drop(w)
		pc.file = nil
	}
}

// dropAll discards every pre-copy left.
func dropAll(w *image.Writer, pcs map[int]*precopied) {
	for pid, pc := range pcs {
		pc.drop(w)
		delete(pcs, pid)
	}
}

// samePrecopy returns the pre-copy of the process with sandbox pid pid if
// it was taken of the same process (host pid); a pre-copy of a pid now used
// by another process is dropped. (A process that exec'd meanwhile keeps
// its pre-copy: its pages are compared by content, and a new address
// space shows every page soft-dirty.)
func (jd *jobDump) samePrecopy(pid, hostPID int) *precopied {
	pc := jd.pre[pid]
	if pc == nil {
		return nil
	}
	delete(jd.pre, pid)
	if pc.hostPID != hostPID {
		pc.drop(jd.opts.Writer)
		return nil
	}
	return pc
}
