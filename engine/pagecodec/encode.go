package pagecodec

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// BlockSize is how much page data one frame holds: large enough for zstd
// to find repeats across pages, small enough that a restore reading a few
// pages decompresses little besides them.
const BlockSize = 1 << 20

const (
	magic       = "CKPTPZ01"
	trailerSize = 8 + 4 + 4 + 8 + 8
	// storedRaw marks an index entry whose block is stored uncompressed.
	storedRaw = 1 << 31
)

// Encoder compresses the page data written to it into frames on out, block
// by block, the blocks of one write on all cores.
type Encoder struct {
	out io.Writer
	zst *zstd.Encoder
	// partial holds the start of a block whose end has not been written yet.
	partial []byte
	frames  []uint32
	data    uint64 // page data taken
	written uint64 // bytes written to out
	workers int
	dst     [][]byte
	// stage collects frames until a page-aligned stretch of them can be
	// written: the page file is written with O_DIRECT (buffered writes of
	// a big checkpoint cost more CPU time than compressing it), which
	// takes aligned buffers and lengths. Mapped, so page-aligned.
	stage  []byte
	mapped []byte
}

// stageSize is the stage's capacity: a group of compressed blocks and the
// unaligned tail of the previous group.
func stageSize(workers int) int { return workers*(BlockSize+BlockSize/8) + 2*alignment }

// alignment is what O_DIRECT needs of buffers and lengths.
const alignment = 4096

// NewEncoder returns an Encoder writing to out.
func NewEncoder(out io.Writer) (*Encoder, error) {
	workers := min(runtime.GOMAXPROCS(0), 8)
	zst, err := zstd.NewWriter(nil,
		// Fastest: a checkpoint's time matters more than the last percent
		// of its size, and page data is mostly either very repetitive or
		// not compressible at all.
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(workers),
		zstd.WithWindowSize(BlockSize),
		zstd.WithEncoderCRC(false), // the file's xxHash64 covers the frames
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	stage, err := unix.Mmap(-1, 0, stageSize(workers), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		zst.Close()
		return nil, fmt.Errorf("map a compression buffer: %w", err)
	}
	e := &Encoder{out: out, zst: zst, workers: workers, dst: make([][]byte, workers), stage: stage[:0], mapped: stage}
	for i := range e.dst {
		e.dst[i] = make([]byte, 0, zst.MaxEncodedSize(BlockSize))
	}
	return e, nil
}

// WriteThrough takes page data: whole blocks are compressed and written
// before it returns, the rest is kept for the next write or Close. It does
// not hold on to p.
func (e *Encoder) WriteThrough(p []byte) (int, error) {
	n := len(p)
	e.data += uint64(n)
	var blocks [][]byte
	if len(e.partial) > 0 {
		k := min(BlockSize-len(e.partial), len(p))
		e.partial = append(e.partial, p[:k]...)
		p = p[k:]
		if len(e.partial) < BlockSize {
			return n, nil
		}
		blocks = append(blocks, e.partial)
	}
	for len(p) >= BlockSize {
		blocks = append(blocks, p[:BlockSize])
		p = p[BlockSize:]
	}
	if err := e.encode(blocks); err != nil {
		return 0, err
	}
	if len(blocks) > 0 && len(e.partial) > 0 {
		e.partial = e.partial[:0]
	}
	if len(p) > 0 {
		if e.partial == nil {
			e.partial = make([]byte, 0, BlockSize)
		}
		e.partial = append(e.partial, p...)
	}
	return n, nil
}

// Write is WriteThrough.
func (e *Encoder) Write(p []byte) (int, error) { return e.WriteThrough(p) }

// encode compresses blocks, workers at a time, and writes their frames in
// order.
func (e *Encoder) encode(blocks [][]byte) error {
	for len(blocks) > 0 {
		group := blocks[:min(len(blocks), e.workers)]
		blocks = blocks[len(group):]
		frames := make([][]byte, len(group))
		var wg sync.WaitGroup
		for i, b := range group {
			wg.Go(func() { frames[i] = e.compress(b, e.dst[i][:0]) })
		}
		wg.Wait()
		for i, b := range group {
			frame, entry := frames[i], uint32(len(frames[i]))
			if frame == nil {
				frame, entry = b, uint32(len(b))|storedRaw
			}
			e.stage = append(e.stage, frame...)
			e.frames = append(e.frames, entry)
			e.written += uint64(len(frame))
		}
		if err := e.flush(false); err != nil {
			return err
		}
	}
	return nil
}

// flush writes the page-aligned part of the stage, or with all everything.
func (e *Encoder) flush(all bool) error {
	n := len(e.stage) &^ (alignment - 1)
	if all {
		n = len(e.stage)
	}
	if n == 0 {
		return nil
	}
	if _, err := e.out.Write(e.stage[:n]); err != nil {
		return fmt.Errorf("write compressed page data: %w", err)
	}
	e.stage = e.stage[:copy(e.stage, e.stage[n:])]
	return nil
}

// sampleSize is how much of a block is compressed first to tell whether
// the rest is worth it: random data, encrypted or already compressed
// buffers and most floating-point arrays do not shrink, and compressing
// them whole would make a checkpoint several times slower for nothing.
const sampleSize = 64 << 10

// compress returns block compressed into dst, or nil when it is better
// stored as it is: compression would not save at least 1/32 of it (less is
// not worth a restore's decompression).
func (e *Encoder) compress(block, dst []byte) []byte {
	worth := func(in, out int) bool { return out < in-in/32 }
	if len(block) >= 4*sampleSize {
		sample := e.zst.EncodeAll(block[:sampleSize], dst[:0])
		if !worth(sampleSize, len(sample)) {
			return nil
		}
	}
	out := e.zst.EncodeAll(block, dst[:0])
	if !worth(len(block), len(out)) {
		return nil
	}
	return out
}

// DataSize is how much page data the encoder has taken.
func (e *Encoder) DataSize() uint64 { return e.data }

// Close writes the last, partial block, the index and the trailer. It does
// not close out.
func (e *Encoder) Close() error {
	defer e.Discard()
	if len(e.partial) > 0 {
		if err := e.encode([][]byte{e.partial}); err != nil {
			return err
		}
		e.partial = nil
	}
	tail := make([]byte, 0, 4*len(e.frames)+trailerSize)
	for _, f := range e.frames {
		tail = binary.LittleEndian.AppendUint32(tail, f)
	}
	tail = append(tail, magic...)
	tail = binary.LittleEndian.AppendUint32(tail, BlockSize)
	tail = binary.LittleEndian.AppendUint32(tail, uint32(len(e.frames)))
	tail = binary.LittleEndian.AppendUint64(tail, e.data)
	tail = binary.LittleEndian.AppendUint64(tail, e.written)
	for len(tail) > 0 {
		n := copy(e.stage[len(e.stage):cap(e.stage)], tail)
		e.stage, tail = e.stage[:len(e.stage)+n], tail[n:]
		if err := e.flush(false); err != nil {
			return err
		}
	}
	return e.flush(true)
}

// Discard releases the encoder's memory without writing anything more;
// Close does it too.
func (e *Encoder) Discard() {
	if e.mapped != nil {
		e.zst.Close()
		unix.Munmap(e.mapped)
		e.mapped, e.stage = nil, nil
	}
}
