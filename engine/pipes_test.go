package engine

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
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
