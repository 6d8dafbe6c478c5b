package memory

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

const (
	// pageBatch is the size of one read of process memory. Two batches are
	// in flight: one being read from the job, one being written out.
	pageBatch = 32 << 20
	// maxIov is IOV_MAX: the most iovecs one process_vm_readv/writev takes.
	maxIov = 1024
)

var zeroPage [pageSize]byte

// Dumper copies the pages a process's image needs into a page file.
// Reading (process_vm_readv) and writing (zero and change detection,
// hashing and disk) overlap: the job's memory is read into one batch while
// the writer goroutine works through the previous one. Runs, the page
// file's offsets and the figures are the writer's.
type Dumper struct {
	pid  int
	out  Sink
	runs []image.PageRun
	off  uint64 // next offset in the page file
	// bytes is the page data written, refBytes the data left in the
	// parent generations' files; read the memory read from the job.
	bytes, refBytes, read int64
	// buffered is the memory read into batches, clean pages left out.
	buffered int64
	// lastVMA is the VMA of the last run; runs never span two VMAs, so a
	// restore can make each VMA writable on its own.
	lastVMA int

	// parent finds a page's data and checksum in the parent generation;
	// nil for a full dump. sums receives one checksum per page of the
	// runs (nil: none are kept).
	parent *parentCursor
	sums   io.Writer
	sumBuf []byte
	// clean finds, on the reading side, the pages the soft-dirty bits say
	// are the parent's (nil: every page is read); cleanBytes counts them.
	clean      *runCursor
	cleanBytes int64
	cleanBuf   []bool
	readRanges []ReadRange
	// running is DumperOptions.Running.
	running bool
	// zeroBuf and pageSums are the writer's per-page scratch (scan).
	zeroBuf  []bool
	pageSums []uint64

	mem *os.File // /proc/pid/mem, for mappings the process cannot read itself
	// shared says which pages of shared memory objects other processes
	// of the job already stored; nil for a single process.
	shared *Shared
	want   []bool
	// progress counts the bytes the writer has written; nil when no one
	// follows them.
	progress Counter

	// pending are the ranges of the batch being collected, in buffer order.
	pending []pendingRange
	filled  int

	maxBufs int // buffer budget, in batches
	bufs    int // batches mapped so far
	free    chan []byte
	full    chan batch
	done    chan error
}

// Sink takes page data straight from the dumper's buffers
// (image.DataFile).
type Sink interface {
	WriteThrough(p []byte) (int, error)
}

// pendingRange is a range of process memory queued for the next read.
type pendingRange struct {
	addr   uint64
	len    int
	kind   image.VMAKind
	vma    int
	viaMem bool // already read through /proc/pid/mem
	// clean pages are not read: by their soft-dirty bits they are the
	// parent's, and take no room in the batch.
	clean bool
	// skip is set on a range of a running process that could not be
	// read (unmapped meanwhile): it is left out.
	skip bool
}

// batch is one read of process memory: buf holds the ranges, in order.
type batch struct {
	buf    []byte
	ranges []pendingRange
}

// segment is a stretch of a batch that goes to the page file.
type segment struct {
	from, to int
}

// DumperOptions are what a Dumper needs besides the process and the page
// file.
type DumperOptions struct {
	// Buffer is how much page data the dumper may hold in memory. While
	// that budget lasts the job's memory is copied at process_vm_readv
	// speed and the job can be released before the disk has caught up;
	// past it, reading waits for the writer.
	Buffer int64
	// Shared, when not nil, says which pages of shared memory objects
	// other processes of the job stored already.
	Shared *Shared
	// Progress, when not nil, counts the bytes of memory processed.
	Progress Counter
	// Parent, when not nil, makes the dump incremental: pages whose
	// checksum matches the parent's are not written, their runs refer to
	// the parent's data.
	Parent *Parent
	// Sums, when not nil, receives the checksum of every page of the
	// runs (image.PageSumsName), for the next incremental dump.
	Sums io.Writer
	// Running says the process runs while it is dumped (a pre-copy):
	// ranges it unmaps meanwhile are left out instead of failing the
	// dump, and what it changes meanwhile is the next dump's to find.
	Running bool
	// Offset is where the page file already ends: the new pages go
	// after what a pre-copy wrote.
	Offset uint64
}

// NewDumper starts a dumper of process pid's pages into out.
func NewDumper(pid int, out Sink, opts DumperOptions) (*Dumper, error) {
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, fmt.Errorf("open memory of %d: %w", pid, err)
	}
	n := int(max(2, opts.Buffer/pageBatch))
	d := &Dumper{
		pid:      pid,
		out:      out,
		mem:      mem,
		shared:   opts.Shared,
		progress: opts.Progress,
		sums:     opts.Sums,
		running:  opts.Running,
		off:      opts.Offset,
		maxBufs:  n,
		free:     make(chan []byte, n),
		full:     make(chan batch, n),
		done:     make(chan error, 1),
	}
	if opts.Parent != nil {
		d.parent = newParentCursor(opts.Parent)
		if opts.Parent.Written != writetrack.None {
			d.clean = &runCursor{p: opts.Parent}
		}
	}
	go d.writer()
	return d, nil
}

// getBuf returns an idle batch buffer, maps a new one while the budget
// allows, or waits for the writer to hand one back. Buffers are mapped
// outside the Go heap so their memory goes back to the system as soon as
// the dump is written.
func (d *Dumper) getBuf() ([]byte, error) {
	select {
	case b := <-d.free:
		return b, nil
	default:
	}
	if d.bufs < d.maxBufs {
		b, err := unix.Mmap(-1, 0, pageBatch, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil, fmt.Errorf("map a %d MiB dump buffer: %w", pageBatch>>20, err)
		}
		d.bufs++
		return b, nil
	}
	return <-d.free, nil
}

// writer turns batches into page runs, in order, writes the pages that
// go to the page file and hands the buffers back.
func (d *Dumper) writer() {
	var err error
	for b := range d.full {
		if err == nil {
			err = d.store(b)
		}
		d.free <- b.buf
	}
	d.done <- err
}

// store records the runs of one batch and writes its new pages: all-zero
// anonymous pages are left out, and in an incremental dump so is every
// page whose checksum matches the parent's page at its address (its run
// refers to the parent's data instead).
func (d *Dumper) store(b batch) error {
	var segs []segment
	pos, n := 0, 0
	d.sumBuf = d.sumBuf[:0]
	filled := 0
	for _, r := range b.ranges {
		if !r.clean {
			filled += r.len
		}
	}
	zero, sums := d.scan(b.buf[:filled], d.sums != nil || d.parent != nil)
	for _, r := range b.ranges {
		n += r.len
		if r.clean {
			if err := d.storeClean(r); err != nil {
				return err
			}
			continue
		}
		for p := pos; p < pos+r.len && !r.skip; p += pageSize {
			if skipZero(r.kind) && zero[p/pageSize] {
				continue
			}
			a := r.addr + uint64(p-pos)
			var sum uint64
			if sums != nil {
				sum = sums[p/pageSize]
				d.sumBuf = binary.LittleEndian.AppendUint64(d.sumBuf, sum)
			}
			if gen, off, ok := d.parent.same(a, sum); ok {
				d.addRun(a, r.vma, gen, off)
				d.refBytes += pageSize
				continue
			}
			d.addRun(a, r.vma, 0, d.off)
			if len(segs) > 0 && segs[len(segs)-1].to == p {
				segs[len(segs)-1].to += pageSize
			} else {
				segs = append(segs, segment{from: p, to: p + pageSize})
			}
			d.off += pageSize
			d.bytes += pageSize
		}
		pos += r.len
	}
	// One write per batch: the pages to store are moved to the front of
	// the batch (each only ever moves down), so an incremental dump's
	// scattered changed pages do not become one small O_DIRECT write each.
	w := 0
	for _, s := range segs {
		w += copy(b.buf[w:], b.buf[s.from:s.to])
	}
	if w > 0 {
		if _, err := d.out.WriteThrough(b.buf[:w]); err != nil {
			return fmt.Errorf("write page data: %w", err)
		}
	}
	if d.sums != nil && len(d.sumBuf) > 0 {
		if _, err := d.sums.Write(d.sumBuf); err != nil {
			return fmt.Errorf("write page checksums: %w", err)
		}
	}
	if d.progress != nil {
		d.progress.Add(int64(n))
	}
	return nil
}

// scan finds the all-zero pages of buf and, with sum, every page's
// checksum, on all cores: it is most of an incremental dump's work.
func (d *Dumper) scan(buf []byte, sum bool) (zero []bool, sums []uint64) {
	pages := len(buf) / pageSize
	if cap(d.zeroBuf) < pages {
		d.zeroBuf, d.pageSums = make([]bool, pages), make([]uint64, pages)
	}
	zero = d.zeroBuf[:pages]
	if sum {
		sums = d.pageSums[:pages]
	}
	workers := min(runtime.GOMAXPROCS(0), max(1, pages/256))
	per := (pages + workers - 1) / workers
	var wg sync.WaitGroup
	for from := 0; from < pages; from += per {
		to := min(pages, from+per)
		wg.Go(func() {
			for i := from; i < to; i++ {
				page := buf[i*pageSize : (i+1)*pageSize]
				zero[i] = bytes.Equal(page, zeroPage[:])
				if sums != nil && !zero[i] {
					sums[i] = xxhash.Sum64(page)
				}
			}
		})
	}
	wg.Wait()
	return zero, sums
}

// storeClean records the pages of a range the soft-dirty bits found
// unchanged: their runs and checksums are the parent's.
func (d *Dumper) storeClean(r pendingRange) error {
	for a := r.addr; a < r.addr+uint64(r.len); a += pageSize {
		sum, gen, off, ok := d.parent.at(a)
		if !ok {
			return fmt.Errorf("page %#x is unchanged since the parent generation, which does not hold it", a)
		}
		d.sumBuf = binary.LittleEndian.AppendUint64(d.sumBuf, sum)
		d.addRun(a, r.vma, gen, off)
		d.refBytes += pageSize
		d.cleanBytes += pageSize
	}
	return nil
}

// addRun adds the page at addr, whose data is at offset off of
// generation gen's page file (0: this one's), to the runs.
func (d *Dumper) addRun(addr uint64, vma, gen int, off uint64) {
	if last := len(d.runs) - 1; last >= 0 && d.lastVMA == vma {
		r := &d.runs[last]
		if r.Generation == gen && r.Addr+r.Pages*pageSize == addr && r.Offset+r.Pages*pageSize == off {
			r.Pages++
			return
		}
	}
	d.runs = append(d.runs, image.PageRun{Addr: addr, Pages: 1, Offset: off, Generation: gen})
	d.lastVMA = vma
}

// recordGuardPages notes the guard regions (MADV_GUARD_INSTALL) among the
// pagemap entries of v from start on: smaps does not show them, only
// pagemap does, so the page walk that reads pagemap anyway records them.
func recordGuardPages(v *image.VMA, start uint64, entries []uint64) {
	first := (start - v.Start) / pageSize
	for j, e := range entries {
		if e&proc.PageGuardRegion != 0 {
			v.GuardPages = append(v.GuardPages, first+uint64(j))
		}
	}
}

// wanted marks the pages from start on that go into this process's page
// file. A page of a shared memory object is stored once, by the first
// process (and mapping) the dump meets it in.
func (d *Dumper) wanted(v *image.VMA, start uint64, entries []uint64) []bool {
	want := d.want[:0]
	obj := v.Shmem
	writableFile := v.Kind == image.VMAFileShared && v.Prot&unix.PROT_WRITE != 0 && v.File != nil
	if writableFile {
		// The file holds what the job wrote through the mapping, and goes
		// on changing after the checkpoint: the pages are stored and
		// written back at restore, like the job's own memory.
		obj = fmt.Sprintf("file:%d:%d", v.File.Dev, v.File.Ino)
	}
	for j, e := range entries {
		w := dumpPage(v.Kind, e)
		if writableFile {
			w = e&proc.PageGuardRegion == 0 && e&proc.PagePresent != 0
		}
		if w && obj != "" && d.shared != nil {
			pgoff := (v.Offset + start - v.Start) / pageSize
			w = d.shared.claim(obj, pgoff+uint64(j))
		}
		want = append(want, w)
	}
	d.want = want
	return want
}

// cleanPages marks the wanted pages from start on that need not be read:
// by write tracking they are the parent's (see cleanSince).
func (d *Dumper) cleanPages(v *image.VMA, start uint64, entries []uint64, want []bool) []bool {
	clean := d.cleanBuf[:0]
	for j, e := range entries {
		clean = append(clean, d.clean != nil && want[j] && cleanSince(d.clean.p.Written, v.Kind, e) && d.clean.has(start+uint64(j)*pageSize))
	}
	d.cleanBuf = clean
	return clean
}

// Dump reads the pages of every VMA that the image needs, and records
// their guard pages in vmas.
func (d *Dumper) Dump(vmas []image.VMA) error {
	pm, err := proc.OpenPagemap(d.pid)
	if err != nil {
		return err
	}
	defer pm.Close()
	var entries []uint64
	buf, err := d.getBuf()
	if err != nil {
		return err
	}
	for i := range vmas {
		v := &vmas[i]
		switch v.Kind {
		case image.VMAAnon, image.VMAAnonShared, image.VMAFilePrivate, image.VMAFileGone, image.VMAFileShared:
		default:
			continue
		}
		// Walk the VMA in chunks so the pagemap buffer stays small for
		// huge sparse mappings.
		for start := v.Start; start < v.End; {
			end := min(v.End, start+pageBatch)
			entries, err = pm.Read(start, end, entries)
			if err != nil {
				return err
			}
			recordGuardPages(v, start, entries)
			want := d.wanted(v, start, entries)
			clean := d.cleanPages(v, start, entries, want)
			for j := 0; j < len(entries); {
				if !want[j] {
					j++
					continue
				}
				k := j
				for k < len(entries) && want[k] && clean[k] == clean[j] {
					k++
				}
				addr := start + uint64(j)*pageSize
				if clean[j] {
					if len(d.pending) == maxIov {
						if buf, err = d.flush(buf); err != nil {
							return err
						}
					}
					d.pending = append(d.pending, pendingRange{addr: addr, len: (k - j) * pageSize, kind: v.Kind, vma: i, clean: true})
					j = k
					continue
				}
				d.noteRead(i, addr, k-j)
				for n := k - j; n > 0; {
					room := (len(buf) - d.filled) / pageSize
					if room == 0 || len(d.pending) == maxIov {
						if buf, err = d.flush(buf); err != nil {
							return err
						}
						continue
					}
					take := min(n, room)
					pr := pendingRange{addr: addr, len: take * pageSize, kind: v.Kind, vma: i}
					if v.Prot&unix.PROT_READ == 0 {
						// process_vm_readv honours protection;
						// /proc/pid/mem reads what the owner could
						// make readable.
						if _, err := d.mem.ReadAt(buf[d.filled:d.filled+pr.len], int64(addr)); err != nil {
							if !d.running {
								return fmt.Errorf("read %#x (+%d pages) of %d via /proc/pid/mem: %w", addr, take, d.pid, err)
							}
							pr.skip = true
						}
						pr.viaMem = true
					}
					d.pending = append(d.pending, pr)
					d.filled += pr.len
					addr += uint64(take) * pageSize
					n -= take
				}
				j = k
			}
			start = end
		}
	}
	if _, err := d.flush(buf); err != nil {
		return err
	}
	d.free <- buf // the last flush took a buffer it did not use
	return nil
}

// flush reads the collected ranges into buf and hands the batch to the
// writer.
func (d *Dumper) flush(buf []byte) ([]byte, error) {
	if len(d.pending) == 0 {
		return buf, nil
	}
	var local []unix.Iovec
	var remote []unix.RemoteIovec
	pos, want := 0, 0
	for _, r := range d.pending {
		if r.clean {
			continue
		}
		if !r.viaMem {
			local = append(local, unix.Iovec{Base: &buf[pos], Len: uint64(r.len)})
			remote = append(remote, unix.RemoteIovec{Base: uintptr(r.addr), Len: r.len})
			want += r.len
		}
		pos += r.len
	}
	if len(remote) > 0 {
		got, err := unix.ProcessVMReadv(d.pid, local, remote, 0)
		switch {
		case (err != nil || got != want) && d.running:
			d.readEach(buf)
		case err != nil:
			return buf, fmt.Errorf("process_vm_readv of %d at %#x: %w", d.pid, remote[0].Base, err)
		case got != want:
			at := uintptr(0)
			for i, n := 0, 0; i < len(remote); i++ {
				if n+remote[i].Len > got {
					at = remote[i].Base + uintptr(got-n)
					break
				}
				n += remote[i].Len
			}
			return buf, fmt.Errorf("process_vm_readv of %d: read %d of %d bytes, stopped at %#x", d.pid, got, want, at)
		}
	}
	for _, r := range d.pending {
		d.read += int64(r.len)
		if !r.clean {
			d.buffered += int64(r.len)
		}
	}
	d.full <- batch{buf: buf, ranges: slices.Clone(d.pending)}
	d.pending = d.pending[:0]
	d.filled = 0
	return d.getBuf()
}

// Close waits for the writer, unmaps the buffers and returns the
// writer's error.
func (d *Dumper) Close() error {
	close(d.full)
	err := <-d.done
	d.mem.Close()
	for {
		select {
		case b := <-d.free:
			unix.Munmap(b)
			continue
		default:
		}
		return err
	}
}

// DefaultBuffer is how much page data a dump may hold in memory: two
// batches, one being read while the other is written, which keeps the
// supervisor's peak memory under 100 MiB (a pre-copy, not a bigger buffer,
// is what keeps a big job's stop short), and at most a quarter of the
// memory available, so a checkpoint never pushes a full node into reclaim.
func DefaultBuffer() int64 {
	const want = 2 * pageBatch
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 2 * pageBatch
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return min(want, kb<<10/4)
		}
	}
	return 2 * pageBatch
}

// Runs are the page runs, in address order; valid after Close.
func (d *Dumper) Runs() []image.PageRun { return d.runs }

// Bytes is the page data written to the page file; valid after Close.
func (d *Dumper) Bytes() int64 { return d.bytes }

// CleanBytes is the page data an incremental dump did not even read, as
// the soft-dirty bits said it was unchanged; valid after Close.
func (d *Dumper) CleanBytes() int64 { return d.cleanBytes }

// Buffered is the memory read into the dumper's batches so far.
func (d *Dumper) Buffered() int64 { return d.buffered }

// Read is the memory read from the process so far.
func (d *Dumper) Read() int64 { return d.read }
