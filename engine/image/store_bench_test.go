package image

import (
	"github.com/cespare/xxhash/v2"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

const benchPageFile = 512 << 20

// benchChunk is what a dump hands the writer per process_vm_readv batch.
func benchChunk() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*31 + i>>9)
	}
	return b
}

// BenchmarkWritePageFile measures committing a generation with one 512 MiB
// page file, fsync included.
func BenchmarkWritePageFile(b *testing.B) {
	s := newStore(b)
	chunk := benchChunk()
	b.SetBytes(benchPageFile)
	for b.Loop() {
		w, err := s.Begin()
		must(b, err)
		d, err := w.Create(PagesName(1))
		must(b, err)
		for range benchPageFile / len(chunk) {
			if _, err := d.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		must(b, d.Close())
		must(b, w.Commit(&Manifest{}))
		must(b, s.Prune(1))
	}
}

// BenchmarkVerifyPageFile measures Verify of a generation with one 512 MiB
// page file, from the page cache and with the file's cache dropped first.
func BenchmarkVerifyPageFile(b *testing.B) {
	s := newStore(b)
	chunk := benchChunk()
	w, err := s.Begin()
	must(b, err)
	d, err := w.Create(PagesName(1))
	must(b, err)
	for range benchPageFile / len(chunk) {
		_, err := d.Write(chunk)
		must(b, err)
	}
	must(b, d.Close())
	must(b, w.Commit(&Manifest{}))
	g, err := s.Open(w.Gen)
	must(b, err)

	b.Run("cached", func(b *testing.B) {
		b.SetBytes(benchPageFile)
		for b.Loop() {
			must(b, g.Verify())
		}
	})
	b.Run("uncached", func(b *testing.B) {
		b.SetBytes(benchPageFile)
		for b.Loop() {
			b.StopTimer()
			f, err := os.Open(g.Path(PagesName(1)))
			must(b, err)
			must(b, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
			f.Close()
			b.StartTimer()
			must(b, g.Verify())
		}
	})
}

// BenchmarkXXH64 is the ceiling for Verify on one file: the hash alone.
func BenchmarkXXH64(b *testing.B) {
	chunk := benchChunk()
	h := xxhash.New()
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		h.Write(chunk)
	}
}
