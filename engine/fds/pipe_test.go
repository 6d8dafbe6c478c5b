package fds

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// bufferedPipe makes a pipe holding data and returns its ends.
func bufferedPipe(t *testing.T, data []byte) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	return r, w
}

// readAllBuffered takes what the pipe holds.
func readAllBuffered(t *testing.T, r *os.File, n int) []byte {
	t.Helper()
	b := make([]byte, n+1)
	got := 0
	for got < n {
		m, err := r.Read(b[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += m
	}
	return b[:got]
}

func TestPipePeekerLeavesTheData(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	r, _ := bufferedPipe(t, data)
	pk := newPipePeeker()
	defer pk.close()
	for round := 0; round < 2; round++ {
		size, got, err := pk.peek(fmt.Sprintf("/proc/self/fd/%d", r.Fd()), false)
		if err != nil {
			t.Fatal(err)
		}
		if size != 1<<20 || !bytes.Equal(got, data) {
			t.Fatalf("round %d: size %d, %d bytes; want %d and the data", round, size, len(got), 1<<20)
		}
	}
	if back := readAllBuffered(t, r, len(data)); !bytes.Equal(back, data) {
		t.Fatalf("the pipe holds %d other bytes after the peeks", len(back))
	}
}

func TestDrainAndRefill(t *testing.T) {
	data := bytes.Repeat([]byte("xyz"), 100000)
	r, _ := bufferedPipe(t, data)
	src, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", r.Fd()), unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(src)
	got, err := drainAndRefill(src, fmt.Sprintf("/proc/self/fd/%d", r.Fd()), len(data))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("drained %d other bytes", len(got))
	}
	if back := readAllBuffered(t, r, len(data)); !bytes.Equal(back, data) {
		t.Fatalf("the pipe holds %d other bytes after the refill", len(back))
	}
}

func TestSizePipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := sizePipe(int(w.Fd()), 256<<10, 10); err != nil {
		t.Fatal(err)
	}
	if got, _ := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0); got != 256<<10 {
		t.Errorf("size %d, want %d", got, 256<<10)
	}
	// Beyond fs.pipe-max-size without CAP_SYS_RESOURCE the size stays,
	// and that is fine for a pipe that holds its data.
	if err := sizePipe(int(w.Fd()), 1<<30, 10); err != nil {
		t.Errorf("a pipe that holds its data was refused: %v", err)
	}
}

// TestPipeRoundTrip restores a pipe holding data with both its ends, a
// pipe of which the child has only the read end (its writer gone: the data,
// then EOF), and a FIFO opened read-write with data in it.
func TestPipeRoundTrip(t *testing.T) {
	both := []byte("buffered in a pipe")
	r1, w1 := bufferedPipe(t, both)
	r2, w2 := bufferedPipe(t, []byte("the writer is gone"))
	w2.Close()
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(fifo, os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("in the FIFO")
	// The FIFO outlives the job, and so would its data while the test
	// holds it open: it goes with the job, as at a restart.
	tp := roundTripAcross(t, func() { readAllBuffered(t, f, len("in the FIFO")) }, r1, w1, r2, f)
	for i, want := range []image.FDKind{image.FDPipe, image.FDPipe, image.FDPipe, image.FDFifo} {
		if got := tp.before[i].Kind; got != want {
			t.Errorf("fd %d dumped as %s, want %s", tp.before[i].Num, got, want)
		}
	}
	if got := tp.before[0].Pipe; !got.ReadEnd || got.WriteEnd || !bytes.Equal(got.Data, both) {
		t.Errorf("read end dumped as %+v", got)
	}
	if tp.before[0].Pipe.Inode != tp.before[1].Pipe.Inode {
		t.Errorf("the two ends of one pipe dumped as pipes %d and %d", tp.before[0].Pipe.Inode, tp.before[1].Pipe.Inode)
	}
	tp.same(t)
	if tp.after[0].Pipe.Inode != tp.after[1].Pipe.Inode {
		t.Errorf("the two ends of one pipe restored as pipes %d and %d", tp.after[0].Pipe.Inode, tp.after[1].Pipe.Inode)
	}
}
