package memory

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// extent is a stretch of page data: len bytes at offset off of a page
// file, which go to addr, or with skip nowhere (read only to take the
// file's checksum).
type extent struct {
	off, addr, len uint64
	skip           bool
}

// pageSources groups p's page runs by the generation whose page file holds
// their data (0: gen's own), each group's extents in file order, and
// returns how far into its own page file the runs read. A pre-copied
// generation's own runs are not in file order: pages the pre-copy wrote
// first, those that changed before the job was stopped after them. Runs of
// earlier generations must name one that gen's manifest lists.
func pageSources(gen *image.Generation, p *image.Process) (map[int][]extent, uint64, error) {
	src := map[int][]extent{}
	var own uint64
	for i, run := range p.PageRuns {
		from := run.Generation
		if from == gen.Gen {
			from = 0
		}
		n := run.Pages * pageSize
		if from < 0 || from > gen.Gen {
			return nil, 0, fmt.Errorf("page run %d at %#x refers to generation %d, which is not earlier than %d", i, run.Addr, from, gen.Gen)
		}
		if run.Offset%pageSize != 0 {
			return nil, 0, fmt.Errorf("page run %d at %#x: file offset %d is not page-aligned", i, run.Addr, run.Offset)
		}
		if from == 0 {
			own = max(own, run.Offset+n)
		}
		ext := src[from]
		if k := len(ext) - 1; k >= 0 && ext[k].off+ext[k].len == run.Offset && ext[k].addr+ext[k].len == run.Addr {
			ext[k].len += n
		} else {
			ext = append(ext, extent{off: run.Offset, addr: run.Addr, len: n})
		}
		src[from] = ext
	}
	for from, ext := range src {
		slices.SortFunc(ext, func(a, b extent) int { return cmp.Compare(a.off, b.off) })
		src[from] = ext
	}
	return src, own, nil
}

// fillPages copies the page data into the rebuilt address space. Each page
// file (this generation's, and for an incremental one the earlier ones it
// reads) is read in file order in large chunks (not faulted in through a
// mapping, which runs at a fraction of the disk's speed when the page cache
// has let go of the file) while the previous chunk is written into the
// process with process_vm_writev. path names the page file in gen.
func (r *Restorer) fillPages(gen *image.Generation, path string) (int64, error) {
	p := r.Img
	if len(p.PageRuns) == 0 {
		return 0, nil
	}
	src, own, err := pageSources(gen, p)
	if err != nil {
		return 0, err
	}
	froms := make([]int, 0, len(src))
	for from := range src {
		froms = append(froms, from)
	}
	slices.Sort(froms)
	var total int64
	var writeTime time.Duration
	defer func() { r.Log.Debugf("pid %d: process_vm_writev took %v", p.PID, writeTime) }()
	for _, from := range froms {
		ext := src[from]
		sum, err := pageFileSum(gen, from, path)
		if err != nil {
			return 0, err
		}
		var n int64
		var wt time.Duration
		if sum.Codec != "" {
			n, wt, err = r.fillEncoded(gen, from, path, sum, ext, r.Unverified)
		} else {
			n, wt, err = r.fillPlain(gen, from, path, sum, own, ext)
		}
		writeTime += wt
		if err != nil {
			what := path
			if from != 0 {
				what = fmt.Sprintf("%s of generation %d", path, from)
			}
			return 0, fmt.Errorf("page data %s: %w", what, err)
		}
		total += n
	}
	return total, nil
}

// pageFileSum is what gen's manifest says of page file path of generation
// from (0: gen's own).
func pageFileSum(gen *image.Generation, from int, path string) (image.FileSum, error) {
	if from == 0 {
		s, ok := gen.Sum(path)
		if !ok {
			return s, fmt.Errorf("page data: generation %d: %s is not in the manifest's file list", gen.Gen, path)
		}
		return s, nil
	}
	ref, ok := gen.Ref(from, path)
	if !ok {
		return image.FileSum{}, fmt.Errorf("page data: generation %d: %s of generation %d is not in the manifest's refs", gen.Gen, path, from)
	}
	return ref.FileSum, nil
}

// fillPlain copies the extents of page file path of generation from (0:
// gen's own), stored as it is, into the process; own is how far gen's own
// page file is read.
func (r *Restorer) fillPlain(gen *image.Generation, from int, path string, sum image.FileSum, own uint64, ext []extent) (int64, time.Duration, error) {
	var verify *image.FileSum
	if r.Unverified {
		var err error
		if ext, verify, err = verifiedRead(gen, from, path, sum, ext); err != nil {
			return 0, 0, err
		}
	}
	f, err := gen.OpenFrom(from, path)
	if err != nil {
		return 0, 0, err
	}
	end := own
	if from != 0 {
		end = uint64(sum.Size)
	}
	return r.fillFrom(f, ext, end, verify)
}

// verifiedRead decides how page file path of generation from (0: gen's
// own), not verified yet, is verified: as it is read, when the fill reads
// all of it in file order, or reads most of it and is made to read the rest
// too (skip extents, whose data goes nowhere); else in full before the
// fill. It returns the extents to read and the checksum they must have.
func verifiedRead(gen *image.Generation, from int, path string, sum image.FileSum, ext []extent) ([]extent, *image.FileSum, error) {
	size := uint64(sum.Size)
	if covers(ext, size) {
		return ext, &sum, nil
	}
	var need uint64
	for _, e := range ext {
		need += e.len
	}
	if need >= size/2 {
		return withGaps(ext, size), &sum, nil
	}
	if err := gen.VerifyFrom(from, path); err != nil {
		return nil, nil, err
	}
	return ext, nil, nil
}

// withGaps returns the extents, in file order, with skip extents for the
// stretches of the file of size bytes that they leave out.
func withGaps(ext []extent, size uint64) []extent {
	out := make([]extent, 0, 2*len(ext)+1)
	var at uint64
	for _, e := range ext {
		if e.off > at {
			out = append(out, extent{off: at, len: e.off - at, skip: true})
		}
		out = append(out, e)
		at = max(at, e.off+e.len)
	}
	if at < size {
		out = append(out, extent{off: at, len: size - at, skip: true})
	}
	return out
}

// covers says whether the extents, in file order, read a file of size
// bytes from its start to its end without a gap: then the file's checksum
// can be taken as it is read.
func covers(ext []extent, size uint64) bool {
	var at uint64
	for _, e := range ext {
		if e.off != at {
			return false
		}
		at += e.len
	}
	return at == size
}

// fillFrom copies the extents of page file f, whose data must lie below
// end, into the process. With verify, the file's checksum is taken as it
// is read and must match before fillFrom returns. It closes f.
func (r *Restorer) fillFrom(f *os.File, ext []extent, end uint64, verify *image.FileSum) (int64, time.Duration, error) {
	for _, e := range ext {
		if e.off+e.len > end {
			f.Close()
			return 0, 0, fmt.Errorf("data for %#x ends at %d, past the file's %d bytes", e.addr, e.off+e.len, end)
		}
	}
	rd, err := openChunkReader(f, planChunks(ext), end)
	if err != nil {
		return 0, 0, err
	}
	defer rd.close()
	w := &pageWriter{pid: r.P.PID}
	return fillChunks(rd, verify, w, func(c chunk) error {
		pos := uint64(0)
		for _, e := range c.ext {
			if !e.skip {
				if err := w.add(c.data[pos:pos+e.len], e.addr); err != nil {
					return err
				}
			}
			pos += e.len
		}
		// The chunk's buffer is reused once handed back: write it out first.
		if err := w.flush(); err != nil {
			return err
		}
		if r.Progress != nil {
			r.Progress.Add(int64(len(c.data)))
		}
		return nil
	})
}

// fillChunks hands every chunk of rd, in file order, to fill, which writes
// its pages with w, taking the file's checksum on the way when verify is
// set. It returns what w wrote and how long that took.
func fillChunks(rd *chunkReader, verify *image.FileSum, w *pageWriter, fill func(chunk) error) (int64, time.Duration, error) {
	sum := newStreamSum(verify)
	for {
		c, ok, err := rd.next()
		if err != nil {
			return 0, w.took, err
		}
		if !ok {
			return w.total, w.took, sum.check()
		}
		sum.add(c.data)
		if err := fill(c); err != nil {
			return 0, w.took, err
		}
		rd.release(c)
	}
}

// streamSum takes a file's checksum as it is read, when it is to be
// verified (want not nil).
type streamSum struct {
	want *image.FileSum
	h    *xxhash.Digest
	n    int64
}

func newStreamSum(want *image.FileSum) *streamSum {
	s := &streamSum{want: want}
	if want != nil {
		s.h = xxhash.New()
	}
	return s
}

func (s *streamSum) add(b []byte) {
	if s.h != nil {
		s.h.Write(b)
		s.n += int64(len(b))
	}
}

// check says whether the whole file was read and its checksum matched.
func (s *streamSum) check() error {
	if s.h != nil && (s.n != s.want.Size || hex.EncodeToString(s.h.Sum(nil)) != s.want.XXH64) {
		return fmt.Errorf("checksum mismatch: the file is corrupt or was modified (nothing of the job has run)")
	}
	return nil
}

// pageWriter gathers copies into the process, up to IOV_MAX, and does them
// with writeParallel.
type pageWriter struct {
	pid    int
	local  []unix.Iovec
	remote []unix.RemoteIovec
	n      int64 // bytes gathered
	total  int64 // bytes written
	took   time.Duration
}

// add queues b for the process's memory at addr; b must stay as it is until
// the next flush.
func (w *pageWriter) add(b []byte, addr uint64) error {
	w.local = append(w.local, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
	w.remote = append(w.remote, unix.RemoteIovec{Base: uintptr(addr), Len: len(b)})
	w.n += int64(len(b))
	if len(w.remote) == maxIov {
		return w.flush()
	}
	return nil
}

// flush writes what was gathered.
func (w *pageWriter) flush() error {
	if len(w.remote) == 0 {
		return nil
	}
	t := time.Now()
	err := writeParallel(w.pid, w.local, w.remote, w.n)
	w.took += time.Since(t)
	if err != nil {
		return err
	}
	w.total += w.n
	w.local, w.remote, w.n = w.local[:0], w.remote[:0], 0
	return nil
}

// writeParallel writes n bytes of local into the process's remote ranges
// with process_vm_writev from one goroutine per core, each taking an equal
// share of the bytes: most of a fill's time is the kernel faulting the
// process's pages in, which goes on in parallel.
func writeParallel(pid int, local []unix.Iovec, remote []unix.RemoteIovec, n int64) error {
	workers := int64(min(runtime.GOMAXPROCS(0), 8))
	if n < 4<<20 || workers < 2 {
		workers = 1
	}
	share := (n/workers + pageSize - 1) &^ (pageSize - 1)
	type part struct {
		local  []unix.Iovec
		remote []unix.RemoteIovec
		n      int64
	}
	var parts []part
	cur := part{}
	for i := range local {
		l, rm := local[i], remote[i]
		for l.Len > 0 {
			take := min(int64(l.Len), share-cur.n)
			cur.local = append(cur.local, unix.Iovec{Base: l.Base, Len: uint64(take)})
			cur.remote = append(cur.remote, unix.RemoteIovec{Base: rm.Base, Len: int(take)})
			cur.n += take
			l.Base = (*byte)(unsafe.Add(unsafe.Pointer(l.Base), take))
			l.Len -= uint64(take)
			rm.Base += uintptr(take)
			rm.Len -= int(take)
			if cur.n == share {
				parts = append(parts, cur)
				cur = part{}
			}
		}
	}
	if cur.n > 0 {
		parts = append(parts, cur)
	}
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() {
			got, err := unix.ProcessVMWritev(pid, p.local, p.remote, 0)
			switch {
			case err != nil:
				errs[i] = fmt.Errorf("write pages at %#x: %w", p.remote[0].Base, err)
			case int64(got) != p.n:
				errs[i] = fmt.Errorf("write pages at %#x: wrote %d of %d bytes", p.remote[0].Base, got, p.n)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// RunBytes is the size of p's page data.
func RunBytes(p *image.Process) int64 {
	var n uint64
	for _, run := range p.PageRuns {
		n += run.Pages * pageSize
	}
	return int64(n)
}
