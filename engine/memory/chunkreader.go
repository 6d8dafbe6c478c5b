package memory

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// A fill reads page files ahead of the copy into the process, in chunks:
// fillReaders reads of fillChunk bytes are in flight at once (a single
// sequential reader leaves a virtual or network disk idle between
// requests), and the chunks are handed over in file order, so the copy and
// the checksum taken on the way see the file as it is laid out.
const (
	fillChunk   = 16 << 20
	fillReaders = 4
)

// chunk is one read of a page file: data holds the pieces of ext, in order.
type chunk struct {
	buf  []byte
	data []byte
	ext  []extent
}

// chunkPlan is what one chunk reads: the extents' pieces, and the reads
// (one per stretch contiguous in the file) that bring them in.
type chunkPlan struct {
	ext   []extent
	reads []extent // off: in the file; addr: offset in the buffer
	size  uint64
}

// planChunks cuts the extents, in file order, into chunks of at most
// fillChunk bytes.
func planChunks(ext []extent) []chunkPlan {
	var plans []chunkPlan
	var cur chunkPlan
	for _, e := range ext {
		for done := uint64(0); done < e.len; {
			n := min(e.len-done, fillChunk-cur.size)
			off := e.off + done
			if k := len(cur.reads) - 1; k >= 0 && cur.reads[k].off+cur.reads[k].len == off {
				cur.reads[k].len += n
			} else {
				cur.reads = append(cur.reads, extent{off: off, addr: cur.size, len: n})
			}
			cur.ext = append(cur.ext, extent{off: off, addr: e.addr + done, len: n, skip: e.skip})
			cur.size += n
			done += n
			if cur.size == fillChunk {
				plans = append(plans, cur)
				cur = chunkPlan{}
			}
		}
	}
	if cur.size > 0 {
		plans = append(plans, cur)
	}
	return plans
}

// chunkReader reads a page file's extents ahead of the copy into the
// process.
type chunkReader struct {
	f     *os.File
	plans []chunkPlan
	// done[i] delivers chunk i; taken is how many next has returned.
	done  []chan chunkResult
	taken int
	free  chan []byte
	stop  chan struct{}
	bufs  [][]byte
	// workers is closed once no reader can still write into a buffer.
	workers chan struct{}
	ended   bool
}

type chunkResult struct {
	c   chunk
	err error
}

// openChunkReader reads the chunks plans describe from f, which must have
// size bytes at least.
func openChunkReader(f *os.File, plans []chunkPlan, size uint64) (*chunkReader, error) {
	path := f.Name()
	// Large reads well ahead: served from the page cache when it has the
	// file, at disk speed with full readahead when not.
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
	rd := &chunkReader{f: f, plans: plans, free: make(chan []byte, fillReaders),
		stop: make(chan struct{}), workers: make(chan struct{})}
	rd.done = make([]chan chunkResult, len(rd.plans))
	for i := range rd.done {
		rd.done[i] = make(chan chunkResult, 1)
	}
	for range min(fillReaders, max(1, len(rd.plans))) {
		// Buffers outside the Go heap, unmapped as soon as the restore
		// is done.
		b, err := unix.Mmap(-1, 0, fillChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			close(rd.workers)
			rd.ended = true
			rd.close()
			return nil, fmt.Errorf("map a read buffer: %w", err)
		}
		rd.bufs = append(rd.bufs, b)
		rd.free <- b
	}
	go rd.dispatch()
	return rd, nil
}

// dispatch gives the chunks buffers in file order (so a buffer is never
// held by a later chunk while an earlier one waits for one) and reads each
// in a goroutine of its own, fillReaders at a time.
func (rd *chunkReader) dispatch() {
	running := make(chan struct{}, fillReaders)
	defer func() {
		for range cap(running) {
			running <- struct{}{}
		}
		close(rd.workers)
	}()
	for i := range rd.plans {
		var b []byte
		select {
		case b = <-rd.free:
		case <-rd.stop:
			return
		}
		running <- struct{}{}
		go func() {
			defer func() { <-running }()
			rd.done[i] <- rd.read(rd.plans[i], b)
		}()
	}
}

// read brings one chunk in.
func (rd *chunkReader) read(p chunkPlan, b []byte) chunkResult {
	for _, r := range p.reads {
		if _, err := rd.f.ReadAt(b[r.addr:r.addr+r.len], int64(r.off)); err != nil {
			return chunkResult{c: chunk{buf: b}, err: err}
		}
	}
	return chunkResult{c: chunk{buf: b, data: b[:p.size], ext: p.ext}}
}

// next returns the next chunk in file order; ok is false after the last.
func (rd *chunkReader) next() (chunk, bool, error) {
	if rd.taken == len(rd.plans) {
		return chunk{}, false, nil
	}
	r := <-rd.done[rd.taken]
	rd.taken++
	if r.err != nil {
		rd.free <- r.c.buf
		return chunk{}, false, r.err
	}
	return r.c, true, nil
}

// release hands a chunk's buffer back for the next read.
func (rd *chunkReader) release(c chunk) { rd.free <- c.buf }

// close stops the readers and frees their buffers. A read never waits
// (each chunk's channel holds its one result) and the dispatcher stops
// at stop, so this returns once the reads in flight are done.
func (rd *chunkReader) close() {
	if !rd.ended {
		rd.ended = true
		close(rd.stop)
		<-rd.workers
	}
	rd.f.Close()
	for _, b := range rd.bufs {
		unix.Munmap(b)
	}
}
