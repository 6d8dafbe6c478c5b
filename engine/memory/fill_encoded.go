package memory

import (
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/pagecodec"
)

// A compressed page file (image.CodecZstd) is read frame by frame: the
// blocks that hold pages of the runs are read in file order like any page
// file's data, decompressed on all cores, and their pages copied into the
// process. Extents count in data offsets (the page data before
// compression).

// blockPieces are the parts of one block that go into the process: at is
// the offset in the block.
type blockPieces struct {
	block  int
	pieces []extent // off: offset in the block
}

// neededBlocks cuts the extents, in data offset order, into the blocks that
// hold them.
func neededBlocks(ext []extent) []blockPieces {
	var out []blockPieces
	for _, e := range ext {
		for done := uint64(0); done < e.len; {
			off := e.off + done
			b, in := int(off/pagecodec.BlockSize), off%pagecodec.BlockSize
			n := min(e.len-done, pagecodec.BlockSize-in)
			if k := len(out) - 1; k < 0 || out[k].block != b {
				out = append(out, blockPieces{block: b})
			}
			k := len(out) - 1
			out[k].pieces = append(out[k].pieces, extent{off: in, addr: e.addr + done, len: n})
			done += n
		}
	}
	return out
}

// planFrames cuts the frames to read (extents in the file whose addr is the
// index of their blockPieces; skip extents only for the checksum) into
// chunks of at most fillChunk bytes of file and of page data, never
// splitting a frame.
func planFrames(ext []extent, x *pagecodec.Index, needs []blockPieces) []chunkPlan {
	var plans []chunkPlan
	var cur chunkPlan
	var data uint64 // page data in cur
	add := func(e extent) {
		if k := len(cur.reads) - 1; k >= 0 && cur.reads[k].off+cur.reads[k].len == e.off {
			cur.reads[k].len += e.len
		} else {
			cur.reads = append(cur.reads, extent{off: e.off, addr: cur.size, len: e.len})
		}
		cur.ext = append(cur.ext, e)
		cur.size += e.len
	}
	next := func() {
		if cur.size > 0 {
			plans = append(plans, cur)
		}
		cur, data = chunkPlan{}, 0
	}
	for _, e := range ext {
		if !e.skip {
			blockData := x.BlockLen(needs[e.addr].block)
			if cur.size+e.len > fillChunk || data+blockData > fillChunk {
				next()
			}
			add(e)
			data += blockData
			continue
		}
		for done := uint64(0); done < e.len; {
			if cur.size == fillChunk {
				next()
			}
			n := min(e.len-done, fillChunk-cur.size)
			add(extent{off: e.off + done, len: n, skip: true})
			done += n
		}
	}
	next()
	return plans
}

// fillEncoded copies the extents of compressed page file path of generation
// from (0: gen's own) into the process. With verify (the file was not
// verified before), it is verified as it is read, or first when the fill
// reads too little of it for that.
func (r *Restorer) fillEncoded(gen *image.Generation, from int, path string, sum image.FileSum, ext []extent, verify bool) (int64, time.Duration, error) {
	for _, e := range ext {
		if e.off+e.len > uint64(sum.DataSize) {
			return 0, 0, fmt.Errorf("data for %#x ends at %d, past the file's %d bytes of page data", e.addr, e.off+e.len, sum.DataSize)
		}
	}
	f, err := gen.OpenFrom(from, path)
	if err != nil {
		return 0, 0, err
	}
	// The index is read before the file's checksum is known: it is
	// checked on its own, and a frame it misplaces fails to decompress or
	// fails the checksum taken on the way.
	x, err := pagecodec.ReadIndex(f, sum.Size, uint64(sum.DataSize))
	if err != nil {
		f.Close()
		return 0, 0, err
	}
	needs := neededBlocks(ext)
	frames := make([]extent, len(needs))
	for i, b := range needs {
		off, n, _ := x.Frame(b.block)
		frames[i] = extent{off: off, addr: uint64(i), len: n}
	}
	var want *image.FileSum
	if verify {
		// The frames are what the fill reads of the file: the same choice
		// as for a page file stored as it is.
		if frames, want, err = verifiedRead(gen, from, path, sum, frames); err != nil {
			f.Close()
			return 0, 0, err
		}
	}
	rd, err := openChunkReader(f, planFrames(frames, x, needs), uint64(sum.Size))
	if err != nil {
		return 0, 0, err
	}
	defer rd.close()
	dec, err := pagecodec.NewDecoder()
	if err != nil {
		return 0, 0, err
	}
	defer dec.Close()
	// Buffers outside the Go heap, unmapped as soon as the fill is done.
	out, err := unix.Mmap(-1, 0, fillChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, 0, fmt.Errorf("map a decompression buffer: %w", err)
	}
	defer unix.Munmap(out)

	w := &pageWriter{pid: r.P.PID}
	return fillChunks(rd, want, w, func(c chunk) error { return r.fillChunk(c, x, needs, dec, out, w) })
}

// fillChunk decompresses the frames of one chunk into out, on all cores
// (a block stored as it is is copied from the chunk itself), and writes
// their pages into the process.
func (r *Restorer) fillChunk(c chunk, x *pagecodec.Index, needs []blockPieces, dec *pagecodec.Decoder, out []byte, w *pageWriter) error {
	type job struct {
		need       blockPieces
		frame, dst []byte
	}
	var jobs []job
	pos, used := uint64(0), uint64(0)
	for _, e := range c.ext {
		frame := c.data[pos : pos+e.len]
		pos += e.len
		if e.skip {
			continue
		}
		b := needs[e.addr]
		if _, _, raw := x.Frame(b.block); raw {
			jobs = append(jobs, job{need: b, dst: frame})
			continue
		}
		n := x.BlockLen(b.block)
		jobs = append(jobs, job{need: b, frame: frame, dst: out[used : used+n]})
		used += n
	}
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, j := range jobs {
		if j.frame == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := dec.Decode(j.dst, j.frame); err != nil {
				errs[i] = fmt.Errorf("block %d: %w", j.need.block, err)
			}
		})
	}
	wg.Wait()
	var data int64
	for i, j := range jobs {
		if errs[i] != nil {
			return errs[i]
		}
		for _, p := range j.need.pieces {
			if err := w.add(j.dst[p.off:p.off+p.len], p.addr); err != nil {
				return err
			}
			data += int64(p.len)
		}
	}
	// out and the chunk's buffer are reused next: write them out first.
	if err := w.flush(); err != nil {
		return err
	}
	if r.Progress != nil {
		r.Progress.Add(data)
	}
	return nil
}
