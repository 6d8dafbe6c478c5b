package memory

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// mapPages maps pages of private anonymous memory in the traced child, at
// addr exactly (0: where the kernel likes), and returns where.
func mapPages(t *testing.T, c *injecttest.Tracee, addr uint64, pages int) uint64 {
	t.Helper()
	flags := uint64(unix.MAP_PRIVATE | unix.MAP_ANONYMOUS)
	if addr != 0 {
		flags |= unix.MAP_FIXED_NOREPLACE
	}
	got, err := c.Thread.Call("mmap pages", unix.SYS_MMAP, addr, uint64(pages)*pageSize, unix.PROT_READ|unix.PROT_WRITE, flags, ^uint64(0), 0)
	if err != nil || (addr != 0 && got != addr) {
		t.Fatalf("map %d pages at %#x in pid %d: %#x, %v", pages, addr, c.PID, got, err)
	}
	return got
}

// counter is a Counter that sums what it is given.
type counter struct{ n, calls int64 }

func (c *counter) Add(n int64) { c.n += n; c.calls++ }

// TestFillPages restores 70 MiB of pages, in two runs with a gap between
// them, into a traced process, counting them in.
func TestFillPages(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	c := injecttest.Start(t, tr)
	const size = 70 << 20
	// The second run leaves a gap of 1000 pages after the first.
	addr := mapPages(t, c, 0, size/pageSize+1000)
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	path := filepath.Join(t.TempDir(), "pages")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &image.Process{PID: c.PID, PageRuns: []image.PageRun{
		{Addr: addr, Pages: 1000},
		{Addr: addr + 2000*pageSize, Pages: size/pageSize - 1000, Offset: 1000 * pageSize},
	}}
	var counted counter
	r := &Restorer{P: c.Proc, Img: p, Log: logrus.StandardLogger(), Progress: &counted}
	if RunBytes(p) != size {
		t.Fatalf("RunBytes = %d, want %d", RunBytes(p), size)
	}
	gen := &image.Generation{Dir: filepath.Dir(path), Manifest: &image.Manifest{Files: []image.FileSum{{Name: filepath.Base(path), Size: size}}}}
	n, err := r.fillPages(gen, filepath.Base(path))
	if err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("filled %d bytes, want %d", n, size)
	}
	if counted.n != size || counted.calls < 2 {
		t.Errorf("counted %d bytes in %d calls, want %d in more than one", counted.n, counted.calls, size)
	}
	got := make([]byte, pageSize)
	if err := c.Proc.Read(addr+2000*pageSize, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[1000*pageSize:1001*pageSize]) {
		t.Fatal("the second page run holds other data than its part of the page file")
	}
}

// TestFillVerifies: with Unverified, the page file's checksum is taken as
// it is read (or first, when it is read in parts), and a file that does not
// match fails the fill.
func TestFillVerifies(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	c := injecttest.Start(t, tr)
	const pages = 64
	addr := mapPages(t, c, 0, pages)
	data := bytes.Repeat([]byte("page data 0123456"), pages*pageSize/16)[:pages*pageSize]
	tests := []struct {
		name    string
		runs    []image.PageRun
		corrupt bool
		want    string
	}{
		{"read whole, intact", []image.PageRun{{Addr: addr, Pages: pages}}, false, ""},
		{"read whole, corrupt", []image.PageRun{{Addr: addr, Pages: pages}}, true, "checksum mismatch"},
		// Out of file order and leaving pages out, as after a pre-copy.
		{"read in parts, intact", []image.PageRun{{Addr: addr, Pages: 8, Offset: 32 * pageSize}, {Addr: addr + 8*pageSize, Pages: 8}}, false, ""},
		{"read in parts, corrupt", []image.PageRun{{Addr: addr, Pages: 8, Offset: 32 * pageSize}, {Addr: addr + 8*pageSize, Pages: 8}}, true, "checksum mismatch"},
		// Most of the file, with a gap where the damage is: read through.
		{"read through gaps, corrupt", []image.PageRun{{Addr: addr, Pages: 40}, {Addr: addr + 41*pageSize, Pages: 23, Offset: 41 * pageSize}}, true, "checksum mismatch"},
		{"read through gaps, intact", []image.PageRun{{Addr: addr, Pages: 40}, {Addr: addr + 41*pageSize, Pages: 23, Offset: 41 * pageSize}}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, image.PagesName(1))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			gen := &image.Generation{Gen: 1, Dir: dir, Manifest: &image.Manifest{Generation: 1, Files: []image.FileSum{sumOf(t, path)}}}
			if tt.corrupt {
				b := bytes.Clone(data)
				b[40*pageSize] ^= 1 // in a page no run reads, for the parts
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			r := &Restorer{P: c.Proc, Img: &image.Process{PID: 1, PageRuns: tt.runs}, Log: logrus.StandardLogger(), Unverified: true}
			_, err := r.fillPages(gen, image.PagesName(1))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("fill: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("fill: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestWithGaps(t *testing.T) {
	got := withGaps([]extent{{off: 4096, addr: 1, len: 4096}, {off: 16384, addr: 2, len: 4096}}, 32768)
	want := []extent{
		{off: 0, len: 4096, skip: true}, {off: 4096, addr: 1, len: 4096},
		{off: 8192, len: 8192, skip: true}, {off: 16384, addr: 2, len: 4096},
		{off: 20480, len: 12288, skip: true},
	}
	if !slices.Equal(got, want) || !covers(got, 32768) {
		t.Fatalf("withGaps = %+v, want %+v", got, want)
	}
}
