package memory

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

// fileSink is a page file for a Dumper.
type fileSink struct{ f *os.File }

func (s fileSink) WriteThrough(p []byte) (int, error) { return s.f.Write(p) }

// dumpGen dumps the pages of vmas of pid as generation gen into dir, on
// parent when not nil, and returns its runs and page checksums.
func dumpGen(t *testing.T, pid int, vmas []image.VMA, dir string, gen int, parent *Parent) ([]image.PageRun, []byte, *Dumper) {
	t.Helper()
	gdir := filepath.Join(dir, image.GenName(gen))
	if err := os.MkdirAll(gdir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(gdir, image.PagesName(1)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sums bytes.Buffer
	d, err := NewDumper(pid, fileSink{f}, DumperOptions{Buffer: 64 << 20, Parent: parent, Sums: &sums})
	if err != nil {
		t.Fatal(err)
	}
	derr := d.Dump(vmas)
	if err := d.Close(); err != nil || derr != nil {
		t.Fatal(derr, err)
	}
	return d.Runs(), sums.Bytes(), d
}

// sumOf is the FileSum of a written page file.
func sumOf(t *testing.T, path string) image.FileSum {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return image.FileSum{Name: filepath.Base(path), Size: int64(len(b)), XXH64: fmt.Sprintf("%016x", xxhash.Sum64(b))}
}

// TestIncrementalDump dumps a process's memory, changes some of its pages
// (one in the middle, a run across two batches' worth of pages, one zeroed)
// and dumps it again on the first dump: only the changed pages are written,
// and the two page files together restore the memory as it is now.
func TestIncrementalDump(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	c := injecttest.Start(t, tr)
	const pages = 512
	addr := mapPages(t, c, 0, pages)
	mem := make([]byte, pages*pageSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range mem {
		mem[i] = byte(rng.Uint32())
	}
	// Page 7 stays zero: never stored.
	clear(mem[7*pageSize : 8*pageSize])
	if err := c.Proc.Write(addr, mem); err != nil {
		t.Fatal(err)
	}
	vmas := []image.VMA{{Start: addr, End: addr + pages*pageSize, Kind: image.VMAAnon, Prot: unix.PROT_READ | unix.PROT_WRITE}}
	dir := t.TempDir()
	runs1, sums1, d1 := dumpGen(t, c.PID, vmas, dir, 1, nil)
	if d1.Bytes() != (pages-1)*pageSize || len(sums1) != (pages-1)*8 {
		t.Fatalf("full dump: %d bytes, %d checksum bytes, want %d and %d", d1.Bytes(), len(sums1), (pages-1)*pageSize, (pages-1)*8)
	}
	// Every page was read, the zero page too: write tracking watches
	// them all again.
	if got, want := d1.ReadRanges(), []ReadRange{{Start: addr, End: addr + pages*pageSize}}; !slices.Equal(got, want) {
		t.Errorf("full dump read %+v, want %+v", got, want)
	}

	changed := map[int]bool{3: true, 100: true, 101: true, 102: true, 400: true}
	for p := range changed {
		for i := p * pageSize; i < (p+1)*pageSize; i++ {
			mem[i] ^= 0x5a
		}
	}
	clear(mem[200*pageSize : 201*pageSize]) // zeroed: left out, restores as zero
	changed[7] = true                       // was zero, now written
	mem[7*pageSize] = 1
	if err := c.Proc.Write(addr, mem); err != nil {
		t.Fatal(err)
	}
	parentRuns := append([]image.PageRun(nil), runs1...)
	for i := range parentRuns {
		parentRuns[i].Generation = 1
	}
	runs2, sums2, d2 := dumpGen(t, c.PID, vmas, dir, 2, &Parent{Runs: parentRuns, Sums: bytes.NewReader(sums1), MinGen: 1})
	if want := int64(len(changed)) * pageSize; d2.Bytes() != want {
		t.Errorf("incremental dump wrote %d bytes, want %d (the changed pages)", d2.Bytes(), want)
	}
	if want := int64(pages-1-len(changed)) * pageSize; d2.refBytes != want {
		t.Errorf("incremental dump left %d bytes in its parent, want %d", d2.refBytes, want)
	}
	if len(sums2) != (pages-1)*8 {
		t.Errorf("incremental dump kept %d checksums, want one per page of its runs (%d)", len(sums2)/8, pages-1)
	}
	for _, r := range runs2 {
		for p := (r.Addr - addr) / pageSize; p < (r.Addr-addr)/pageSize+r.Pages; p++ {
			if changed[int(p)] != (r.Generation == 0) {
				t.Errorf("page %d in run %+v: changed=%v", p, r, changed[int(p)])
			}
		}
	}

	// A parent too old to refer to: everything is written again.
	_, _, d3 := dumpGen(t, c.PID, vmas, dir, 3, &Parent{Runs: parentRuns, Sums: bytes.NewReader(sums1), MinGen: 2})
	if d3.refBytes != 0 || d3.Bytes() != (pages-1)*pageSize {
		t.Errorf("dump with MinGen past the parent: wrote %d, referred to %d bytes; want everything written", d3.Bytes(), d3.refBytes)
	}

	// Restore generation 2 into a fresh mapping of another process.
	c2 := injecttest.Start(t, tr)
	mapPages(t, c2, addr, pages)
	g1, g2 := filepath.Join(dir, image.GenName(1)), filepath.Join(dir, image.GenName(2))
	gen := &image.Generation{Gen: 2, Dir: g2, Manifest: &image.Manifest{
		Generation: 2,
		Files:      []image.FileSum{sumOf(t, filepath.Join(g2, image.PagesName(1)))},
		Refs:       []image.FileRef{{Generation: 1, FileSum: sumOf(t, filepath.Join(g1, image.PagesName(1)))}},
	}}
	var counted counter
	r := &Restorer{P: c2.Proc, Img: &image.Process{PID: 1, PageRuns: runs2}, Log: logrus.StandardLogger(), Progress: &counted}
	n, err := r.fillPages(gen, image.PagesName(1))
	if err != nil {
		t.Fatal(err)
	}
	if n != (pages-1)*pageSize || counted.n != n {
		t.Errorf("filled %d bytes, counted %d, want %d", n, counted.n, (pages-1)*pageSize)
	}
	got := make([]byte, len(mem))
	if err := c2.Proc.Read(addr, got); err != nil {
		t.Fatal(err)
	}
	for p := range pages {
		if !bytes.Equal(got[p*pageSize:(p+1)*pageSize], mem[p*pageSize:(p+1)*pageSize]) {
			t.Errorf("page %d differs after restoring the incremental generation", p)
		}
	}
}

func TestCleanSince(t *testing.T) {
	const (
		present   = proc.PagePresent
		exclusive = proc.PageExclusive
		dirty     = proc.PageSoftDirty
	)
	tests := []struct {
		name string
		kind image.VMAKind
		e    uint64
		want bool
	}{
		{"private, mapped alone, not written", image.VMAAnon, present | exclusive, true},
		{"written since", image.VMAAnon, present | exclusive | dirty, false},
		{"shared with a forked process", image.VMAAnon, present, false},
		{"the shared zero page", image.VMAAnon, present, false},
		{"in swap", image.VMAAnon, proc.PageSwapped, false},
		{"private copy of a file page", image.VMAFilePrivate, present | exclusive, true},
		{"shared anonymous", image.VMAAnonShared, present | exclusive, false},
		{"shared file", image.VMAFileShared, present | exclusive, false},
		{"deleted file", image.VMAFileGone, present | exclusive, false},
	}
	for _, tt := range tests {
		if got := cleanSince(writetrack.SoftDirty, tt.kind, tt.e); got != tt.want {
			t.Errorf("%s: cleanSince = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRunCursor(t *testing.T) {
	p := &Parent{MinGen: 3, Runs: []image.PageRun{
		{Addr: 0x10000, Pages: 2, Generation: 3},
		{Addr: 0x20000, Pages: 1, Generation: 2}, // too old to refer to
		{Addr: 0x30000, Pages: 4, Generation: 5},
	}}
	c := &runCursor{p: p}
	for _, tt := range []struct {
		addr uint64
		want bool
	}{
		{0x0f000, false}, {0x10000, true}, {0x11000, true}, {0x12000, false},
		{0x20000, false}, {0x30000, true}, {0x33000, true}, {0x34000, false}, {0x90000, false},
	} {
		if got := c.has(tt.addr); got != tt.want {
			t.Errorf("has(%#x) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}
