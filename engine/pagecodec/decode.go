package pagecodec

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// Index locates the frames of an encoded page file.
type Index struct {
	// DataSize is the size of the page data before compression.
	DataSize uint64
	// FramesEnd is where the frames end and the index begins.
	FramesEnd uint64
	off       []uint64 // frame i starts at off[i] and ends at off[i+1]
	raw       []bool
}

// ReadIndex reads and checks the index of the encoded file r of size bytes,
// which must hold dataSize bytes of page data (the manifest's word).
func ReadIndex(r io.ReaderAt, size int64, dataSize uint64) (*Index, error) {
	if size < trailerSize {
		return nil, fmt.Errorf("compressed page file of %d bytes has no index", size)
	}
	tr := make([]byte, trailerSize)
	if _, err := r.ReadAt(tr, size-trailerSize); err != nil {
		return nil, fmt.Errorf("read compressed page file index: %w", err)
	}
	if string(tr[:8]) != magic {
		return nil, fmt.Errorf("compressed page file: no index at its end (magic %q)", tr[:8])
	}
	block := binary.LittleEndian.Uint32(tr[8:])
	count := uint64(binary.LittleEndian.Uint32(tr[12:]))
	x := &Index{DataSize: binary.LittleEndian.Uint64(tr[16:]), FramesEnd: binary.LittleEndian.Uint64(tr[24:])}
	switch {
	case block != BlockSize:
		return nil, fmt.Errorf("compressed page file: block size %d, this ckpt-apptainer writes and reads %d", block, BlockSize)
	case x.DataSize != dataSize:
		return nil, fmt.Errorf("compressed page file holds %d bytes of page data, the manifest says %d", x.DataSize, dataSize)
	case count != (x.DataSize+BlockSize-1)/BlockSize:
		return nil, fmt.Errorf("compressed page file: %d blocks for %d bytes of page data", count, x.DataSize)
	case x.FramesEnd >= uint64(size) || x.FramesEnd+4*count+trailerSize != uint64(size):
		return nil, fmt.Errorf("compressed page file: frames end at %d and %d index entries follow, but the file has %d bytes", x.FramesEnd, count, size)
	}
	entries := make([]byte, 4*count)
	if _, err := r.ReadAt(entries, int64(x.FramesEnd)); err != nil {
		return nil, fmt.Errorf("read compressed page file index: %w", err)
	}
	x.off = make([]uint64, count+1)
	x.raw = make([]bool, count)
	for i := range count {
		e := binary.LittleEndian.Uint32(entries[4*i:])
		n := uint64(e &^ storedRaw)
		x.raw[i] = e&storedRaw != 0
		if x.raw[i] && n != x.BlockLen(int(i)) {
			return nil, fmt.Errorf("compressed page file: block %d is stored as %d bytes, it holds %d", i, n, x.BlockLen(int(i)))
		}
		x.off[i+1] = x.off[i] + n
	}
	if x.off[count] != x.FramesEnd {
		return nil, fmt.Errorf("compressed page file: its frames add up to %d bytes, the index begins at %d", x.off[count], x.FramesEnd)
	}
	return x, nil
}

// Blocks is the number of blocks.
func (x *Index) Blocks() int { return len(x.raw) }

// Frame returns where block i's frame lies in the file and whether it is
// stored uncompressed.
func (x *Index) Frame(i int) (off, n uint64, raw bool) {
	return x.off[i], x.off[i+1] - x.off[i], x.raw[i]
}

// BlockLen is how much page data block i holds: BlockSize, less in the last.
func (x *Index) BlockLen(i int) uint64 {
	return min(BlockSize, x.DataSize-uint64(i)*BlockSize)
}

// Decoder decompresses frames, from several goroutines at once.
type Decoder struct {
	zst *zstd.Decoder
}

// NewDecoder returns a Decoder; Close releases it.
func NewDecoder() (*Decoder, error) {
	zst, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(min(runtime.GOMAXPROCS(0), 8)),
		zstd.WithDecoderMaxMemory(BlockSize),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return &Decoder{zst: zst}, nil
}

// Decode decompresses frame into dst, which must come out exactly full.
func (d *Decoder) Decode(dst, frame []byte) error {
	if len(dst) == 0 {
		return nil
	}
	out, err := d.zst.DecodeAll(frame, dst[:0:len(dst)])
	switch {
	case err != nil:
		return fmt.Errorf("decompress page data: %w", err)
	case len(out) != len(dst):
		return fmt.Errorf("decompress page data: a block of %d bytes came out as %d", len(dst), len(out))
	case &out[0] != &dst[0]:
		copy(dst, out)
	}
	return nil
}

// Close releases the decoder.
func (d *Decoder) Close() { d.zst.Close() }
