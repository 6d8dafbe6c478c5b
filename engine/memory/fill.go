package memory

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// fillChunk is how much of a page file one read brings in. Two chunks are
// in flight: one being read from disk, one being copied into the process.
const fillChunk = 32 << 20

// fillPages copies the page data into the rebuilt address space. The page
// file is read sequentially in large chunks (not faulted in through a
// mapping, which runs at a fraction of the disk's speed when the page cache
// has let go of the file) while the previous chunk is written into the
// process with process_vm_writev. path names the page file in gen.
func (r *Restorer) fillPages(gen *image.Generation, path string) (int64, error) {
	p := r.Img
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
	f, err := gen.Open(path)
	if err != nil {
		return 0, fmt.Errorf("page data: %w", err)
	}
	rd, err := openChunkReader(f, want)
	if err != nil {
		return 0, err
	}
	defer rd.close()

	var local []unix.Iovec
	var remote []unix.RemoteIovec
	var total int64
	var writeTime time.Duration
	defer func() { r.Log.Debugf("pid %d: process_vm_writev took %v", p.PID, writeTime) }()
	flush := func() error {
		if len(remote) == 0 {
			return nil
		}
		var n int64
		for _, l := range local {
			n += int64(l.Len)
		}
		tw := time.Now()
		got, err := unix.ProcessVMWritev(r.P.PID, local, remote, 0)
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
		if r.Progress != nil {
			r.Progress.Add(int64(len(c.data)))
		}
		rd.release(c)
	}
	return total, nil
}

// RunBytes is the size of p's page data.
func RunBytes(p *image.Process) int64 {
	var n uint64
	for _, run := range p.PageRuns {
		n += run.Pages * pageSize
	}
	return int64(n)
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

func openChunkReader(f *os.File, size uint64) (*chunkReader, error) {
	path := f.Name()
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
