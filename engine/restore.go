package engine

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/stub"
)

// Spawner starts restore stubs inside the job sandbox.
type Spawner interface {
	// SpawnStub starts the static executable elf as a child of the
	// sandbox's init with sandbox pid nsPID and returns its host pid.
	SpawnStub(elf []byte, nsPID int) (hostPID int, err error)
}

// RestoreOptions says what to restore and where.
type RestoreOptions struct {
	// Dir is the generation directory; Manifest its verified manifest.
	Dir      string
	Manifest *image.Manifest
	Spawner  Spawner
	// NoRollback keeps files the job writes at their current length
	// instead of cutting them back to their length at checkpoint time.
	NoRollback bool
	Log        logrus.FieldLogger
}

// RestoreResult reports a finished restore.
type RestoreResult struct {
	HostPID  int // host pid of the job's main process
	NSPID    int
	Bytes    int64
	Duration time.Duration
}

const stubScratch = 256 << 10

// Restore re-creates the job's processes from a generation. On success the
// processes run; on failure none of them is left running.
func Restore(opts RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	m := opts.Manifest
	if len(m.Processes) != 1 {
		return nil, fmt.Errorf("restore: the image holds %d processes; restoring more than one process is not supported yet", len(m.Processes))
	}
	ref := m.Processes[0]
	var p image.Process
	data, err := os.ReadFile(filepath.Join(opts.Dir, ref.Core))
	if err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", ref.PID, err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("restore pid %d: parse %s: %w", ref.PID, ref.Core, err)
	}
	if err := preflight(&p, opts); err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", p.PID, err)
	}

	t := ptrace.NewTracer()
	defer t.Close()
	r := &restorer{t: t, log: opts.Log, proc: &p}
	hostPID, err := r.start(opts.Spawner)
	if err != nil {
		return nil, fmt.Errorf("restore pid %d: %w", p.PID, err)
	}
	bytes, err := r.run(filepath.Join(opts.Dir, ref.Pages))
	if err != nil {
		unix.Kill(hostPID, unix.SIGKILL)
		return nil, fmt.Errorf("restore pid %d: %w", p.PID, err)
	}
	return &RestoreResult{HostPID: hostPID, NSPID: p.PID, Bytes: bytes, Duration: time.Since(start)}, nil
}

// restorer morphs one stub into one checkpointed process.
type restorer struct {
	remote
	t      *ptrace.Tracer
	log    logrus.FieldLogger
	proc   *image.Process
	layout stub.Layout
	// threads are the restored threads, in the order of proc.Threads.
	threads []*ptrace.Thread
}

// start spawns the stub and takes it under ptrace. On failure the stub is
// killed.
func (r *restorer) start(sp Spawner) (_ int, err error) {
	base, err := stubBase(r.proc.VMAs, stub.Size(stubScratch))
	if err != nil {
		return 0, err
	}
	elf, layout := stub.Build(base, stubScratch)
	r.layout = layout
	pid, err := sp.SpawnStub(elf, r.proc.PID)
	if err != nil {
		return 0, fmt.Errorf("spawn stub: %w", err)
	}
	if pid <= 0 {
		return 0, fmt.Errorf("spawn stub: no pid")
	}
	defer func() {
		if err != nil {
			unix.Kill(pid, unix.SIGKILL)
		}
	}()
	// EXITKILL: if the supervisor dies half-way, the half-built process
	// dies with it instead of running on.
	if err := r.t.Seize(pid, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACECLONE); err != nil {
		return 0, err
	}
	if err := r.t.Interrupt(pid); err != nil {
		return 0, err
	}
	if _, err := r.t.WaitStop(pid, 0); err != nil {
		return 0, err
	}
	main, err := r.t.NewThread(pid, layout.Gadget)
	if err != nil {
		return 0, err
	}
	r.remote = remote{pid: pid, main: main, scratch: layout.Scratch, size: layout.ScratchSize}
	if err := r.unmapStubFile(); err != nil {
		return 0, err
	}
	return pid, nil
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
	if _, err := r.main.Call("mmap stub", unix.SYS_MMAP, l.Base, size, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uint64(0), 0); err != nil {
		return err
	}
	if err := r.write(l.Base, stub.Code()); err != nil {
		return err
	}
	if _, err := r.main.Call("mprotect stub", unix.SYS_MPROTECT, l.Base, pageSize, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return err
	}
	_, err := r.main.Call("mprotect scratch", unix.SYS_MPROTECT, l.Scratch, l.ScratchSize, unix.PROT_READ|unix.PROT_WRITE)
	return err
}

// run performs the restore steps in the order the kernel needs them: the
// address space first, then process-wide state, then threads, and the
// capabilities that made it all possible last.
func (r *restorer) run(pagesPath string) (int64, error) {
	p := r.proc
	parked, err := r.parkSpecialMappings()
	if err != nil {
		return 0, fmt.Errorf("vdso: %w", err)
	}
	t0 := time.Now()
	if err := r.restoreVMAs(p); err != nil {
		return 0, err
	}
	r.log.Debugf("pid %d: %d mappings re-created in %v", p.PID, len(p.VMAs), time.Since(t0))
	t0 = time.Now()
	n, err := r.fillPages(p, pagesPath)
	if err != nil {
		return 0, err
	}
	r.log.Debugf("pid %d: %d bytes of pages filled in %v", p.PID, n, time.Since(t0))
	if err := r.finishVMAs(p); err != nil {
		return 0, err
	}
	if err := r.placeSpecialMappings(parked); err != nil {
		return 0, fmt.Errorf("vdso: %w", err)
	}
	if err := r.restoreMM(p); err != nil {
		return 0, err
	}
	if err := r.restoreTask(p); err != nil {
		return 0, err
	}
	if err := r.restoreFiles(p); err != nil {
		return 0, err
	}
	if err := r.restoreSignals(p); err != nil {
		return 0, err
	}
	if err := r.restoreThreads(p); err != nil {
		return 0, err
	}
	if err := r.release(); err != nil {
		return 0, err
	}
	return n, nil
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

// fillChunk is how much of a page file one read brings in. Two chunks are
// in flight: one being read from disk, one being copied into the process.
const fillChunk = 32 << 20

// fillPages copies the page data into the rebuilt address space. The page
// file is read sequentially in large chunks (not faulted in through a
// mapping, which runs at a fraction of the disk's speed when the page cache
// has let go of the file) while the previous chunk is written into the
// process with process_vm_writev.
func (r *restorer) fillPages(p *image.Process, path string) (int64, error) {
	if len(p.PageRuns) == 0 {
		return 0, nil
	}
	var want uint64
	for i, run := range p.PageRuns {
		if run.Generation != 0 {
			return 0, fmt.Errorf("page run at %#x refers to generation %d: incremental images are not supported yet", run.Addr, run.Generation)
		}
		if run.Offset != want {
			return 0, fmt.Errorf("page run %d at %#x: file offset %d, expected %d: page runs must be stored in order", i, run.Addr, run.Offset, want)
		}
		want += run.Pages * pageSize
	}
	rd, err := openChunkReader(path, want)
	if err != nil {
		return 0, err
	}
	defer rd.close()

	var local []unix.Iovec
	var remote []unix.RemoteIovec
	var total int64
	var writeTime time.Duration
	defer func() { r.log.Debugf("pid %d: process_vm_writev took %v", p.PID, writeTime) }()
	flush := func() error {
		if len(remote) == 0 {
			return nil
		}
		var n int64
		for _, l := range local {
			n += int64(l.Len)
		}
		tw := time.Now()
		got, err := unix.ProcessVMWritev(r.pid, local, remote, 0)
		writeTime += time.Since(tw)
		if err != nil {
			return fmt.Errorf("write pages at %#x: %w", remote[0].Base, err)
		}
		if int64(got) != n {
			return fmt.Errorf("write pages at %#x: wrote %d of %d bytes", remote[0].Base, got, n)
		}
		total += n
		local, remote = local[:0], remote[:0]
		return nil
	}
	run, done := 0, uint64(0) // the run being copied, and how much of it is
	for run < len(p.PageRuns) {
		c, err := rd.next()
		if err != nil {
			return 0, fmt.Errorf("page data %s: %w", path, err)
		}
		for pos := uint64(0); pos < uint64(len(c.data)) && run < len(p.PageRuns); {
			pr := p.PageRuns[run]
			n := min(pr.Pages*pageSize-done, uint64(len(c.data))-pos)
			local = append(local, unix.Iovec{Base: &c.data[pos], Len: n})
			remote = append(remote, unix.RemoteIovec{Base: uintptr(pr.Addr + done), Len: int(n)})
			pos += n
			done += n
			if done == pr.Pages*pageSize {
				run, done = run+1, 0
			}
			if len(remote) == maxIov {
				if err := flush(); err != nil {
					return 0, err
				}
			}
		}
		// The chunk's buffer is reused once handed back: write it out first.
		if err := flush(); err != nil {
			return 0, err
		}
		rd.release(c)
	}
	return total, nil
}

// chunk is one read of a page file.
type chunk struct {
	buf  []byte
	data []byte
}

// chunkReader reads a page file ahead of the copy into the process.
type chunkReader struct {
	f     *os.File
	size  uint64
	full  chan chunk
	free  chan []byte
	errc  chan error
	stop  chan struct{}
	bufs  [][]byte
	ended bool
}

func openChunkReader(path string, size uint64) (*chunkReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("page data: %w", err)
	}
	// Large sequential reads: served from the page cache when the checksum
	// pass left the file there, at disk speed with full readahead when not.
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("page data: %w", err)
	}
	if uint64(st.Size()) < size {
		f.Close()
		return nil, fmt.Errorf("page data %s has %d bytes, the page runs need %d", path, st.Size(), size)
	}
	rd := &chunkReader{f: f, size: size, full: make(chan chunk, 2), free: make(chan []byte, 2),
		errc: make(chan error, 1), stop: make(chan struct{})}
	for i := 0; i < 2; i++ {
		// Buffers outside the Go heap, unmapped as soon as the restore
		// is done.
		b, err := unix.Mmap(-1, 0, fillChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			rd.close()
			return nil, fmt.Errorf("map a read buffer: %w", err)
		}
		rd.bufs = append(rd.bufs, b)
		rd.free <- b
	}
	go rd.read()
	return rd, nil
}

func (rd *chunkReader) read() {
	defer close(rd.full)
	for off := uint64(0); off < rd.size; {
		var b []byte
		select {
		case b = <-rd.free:
		case <-rd.stop:
			return
		}
		n := min(uint64(len(b)), rd.size-off)
		if _, err := rd.f.ReadAt(b[:n], int64(off)); err != nil {
			rd.errc <- err
			return
		}
		rd.full <- chunk{buf: b, data: b[:n]}
		off += n
	}
}

// next returns the next chunk in file order.
func (rd *chunkReader) next() (chunk, error) {
	c, ok := <-rd.full
	if !ok {
		select {
		case err := <-rd.errc:
			return chunk{}, err
		default:
			return chunk{}, fmt.Errorf("page data ended early")
		}
	}
	return c, nil
}

// release hands a chunk's buffer back for the next read.
func (rd *chunkReader) release(c chunk) { rd.free <- c.buf }

// close stops the reader and frees its buffers.
func (rd *chunkReader) close() {
	if !rd.ended {
		rd.ended = true
		close(rd.stop)
		for range rd.full {
		}
	}
	rd.f.Close()
	for _, b := range rd.bufs {
		unix.Munmap(b)
	}
}

// release unmaps the stub, sets every thread's final registers and lets the
// process run. Unmapping the stub is the last injected call: the step over
// it returns to an address that no longer exists, which is fine, because
// the registers are replaced before the thread runs again.
func (r *restorer) release() error {
	if _, err := r.main.Call("munmap stub", unix.SYS_MUNMAP, r.layout.Base, r.layout.End-r.layout.Base); err != nil {
		return err
	}
	for i, th := range r.threads {
		if err := r.setFinalRegs(th, &r.proc.Threads[i]); err != nil {
			return err
		}
	}
	for _, th := range r.threads {
		if err := r.t.Detach(th.TID, 0); err != nil {
			return err
		}
	}
	return nil
}
