package memory

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/pagecodec"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// stampedPages makes n pages, each starting with its number; every third
// block random (stored as it is), the rest repetitive (compressed).
func stampedPages(n int) []byte {
	rng := rand.New(rand.NewPCG(7, 7))
	b := make([]byte, n*pageSize)
	for i := range b {
		if (i/pagecodec.BlockSize)%3 == 2 {
			b[i] = byte(rng.Uint32())
		} else {
			b[i] = "compressible "[i%13]
		}
	}
	for p := range n {
		binary.LittleEndian.PutUint64(b[p*pageSize:], uint64(p))
	}
	return b
}

// writeEncoded writes data compressed to path and returns its manifest entry.
func writeEncoded(t *testing.T, path string, data []byte) image.FileSum {
	t.Helper()
	var buf bytes.Buffer
	e, err := pagecodec.NewEncoder(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.WriteThrough(data); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return image.FileSum{Name: filepath.Base(path), Size: int64(buf.Len()), XXH64: fmt.Sprintf("%016x", xxhash.Sum64(buf.Bytes())),
		Codec: image.CodecZstd, DataSize: int64(len(data))}
}

// TestFillEncoded restores pages from a compressed page file: all of it, a
// few pages of one block (the file verified first), most of it out of order
// (verified as it is read, through the gaps), and damaged files, which
// must fail the fill.
func TestFillEncoded(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	c := injecttest.Start(t, tr)
	const pages = 5*pagecodec.BlockSize/pageSize + 3
	addr := mapPages(t, c, 0, pages)
	data := stampedPages(pages)
	whole := []image.PageRun{{Addr: addr, Pages: pages}}
	few := []image.PageRun{{Addr: addr + 300*pageSize, Pages: 5, Offset: 300 * pageSize}}
	// Blocks 2 to 5, then block 0: block 1 is read only for the checksum.
	const block = pagecodec.BlockSize / pageSize
	most := []image.PageRun{
		{Addr: addr + 2*block*pageSize, Pages: pages - 2*block, Offset: 2 * block * pageSize},
		{Addr: addr, Pages: block},
	}
	tests := []struct {
		name   string
		runs   []image.PageRun
		damage func(b []byte, x *pagecodec.Index) // the file's bytes
		want   string
	}{
		{"whole", whole, nil, ""},
		{"a few pages", few, nil, ""},
		{"most, out of order", most, nil, ""},
		{"whole, a frame damaged", whole, func(b []byte, _ *pagecodec.Index) { b[len(b)/3] ^= 0x5a }, "page data"},
		{"a few pages, another block damaged", few, func(b []byte, _ *pagecodec.Index) { b[len(b)-200] ^= 1 }, "checksum"},
		{"most, the gap damaged", most, func(b []byte, x *pagecodec.Index) { off, n, _ := x.Frame(1); b[off+n/2] ^= 1 }, "checksum"},
		{"index damaged", whole, func(b []byte, _ *pagecodec.Index) { b[len(b)-40] ^= 0x40 }, "compressed page file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, image.PagesName(1))
			sum := writeEncoded(t, path, data)
			if tt.damage != nil {
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				x, err := pagecodec.ReadIndex(bytes.NewReader(b), sum.Size, uint64(sum.DataSize))
				if err != nil {
					t.Fatal(err)
				}
				tt.damage(b, x)
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			gen := &image.Generation{Gen: 1, Dir: dir, Manifest: &image.Manifest{Generation: 1, Files: []image.FileSum{sum}}}
			var counted counter
			r := &Restorer{P: c.Proc, Img: &image.Process{PID: 1, PageRuns: tt.runs}, Log: logrus.StandardLogger(), Unverified: true, Progress: &counted}
			n, err := r.fillPages(gen, image.PagesName(1))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("fill: %v, want an error containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("fill: %v", err)
			}
			if n != RunBytes(r.Img) || counted.n != n {
				t.Errorf("filled %d bytes, counted %d, runs hold %d", n, counted.n, RunBytes(r.Img))
			}
			for _, run := range tt.runs {
				got := make([]byte, run.Pages*pageSize)
				if err := c.Proc.Read(run.Addr, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data[run.Offset:run.Offset+run.Pages*pageSize]) {
					t.Errorf("run at offset %d: the process holds other data than the file's", run.Offset)
				}
			}
		})
	}
}

func TestPlanFrames(t *testing.T) {
	// Twenty-four blocks that compress to 100 KiB each: chunks are bound
	// by the 16 MiB of page data they decompress to, not by the file.
	var frames []extent
	var needs []blockPieces
	for i := range 24 {
		frames = append(frames, extent{off: uint64(i) * 100 << 10, addr: uint64(i), len: 100 << 10})
		needs = append(needs, blockPieces{block: i})
	}
	x := testIndex(t, 24*pagecodec.BlockSize)
	plans := planFrames(frames, x, needs)
	if len(plans) != 2 || len(plans[0].ext) != fillChunk/pagecodec.BlockSize || len(plans[0].reads) != 1 {
		t.Fatalf("plans: %d, first with %d frames in %d reads; want 2, %d frames in 1 read", len(plans), len(plans[0].ext), len(plans[0].reads), fillChunk/pagecodec.BlockSize)
	}
	// A 40 MiB gap read only for the checksum is cut at the chunk size.
	plans = planFrames([]extent{frames[0], {off: 100 << 10, len: 40 << 20, skip: true}}, x, needs)
	if len(plans) != 3 || plans[0].size != fillChunk || plans[2].size != (100<<10)+(40<<20)-2*fillChunk {
		t.Fatalf("plans with a gap: %+v", plans)
	}
}

// testIndex is the index of a compressed file of size bytes of repetitive
// page data.
func testIndex(t *testing.T, size int) *pagecodec.Index {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pages")
	sum := writeEncoded(t, path, bytes.Repeat([]byte{7}, size))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	x, err := pagecodec.ReadIndex(f, sum.Size, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	return x
}
