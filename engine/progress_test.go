package engine

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fds"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// progressCalls records the calls of a ProgressFunc.
type progressCalls struct {
	mu       sync.Mutex
	busy     bool
	overlaps int
	calls    [][2]int64
}

func (c *progressCalls) record(done, total int64) {
	c.mu.Lock()
	if c.busy {
		c.overlaps++
	}
	c.busy = true
	c.calls = append(c.calls, [2]int64{done, total})
	c.mu.Unlock()
	time.Sleep(100 * time.Microsecond) // long enough for a second caller to overlap
	c.mu.Lock()
	c.busy = false
	c.mu.Unlock()
}

// check verifies the calls of a finished operation of want bytes: never
// two at once, done rising and never above total, done == total == want
// at the end, and not one call per page.
func (c *progressCalls) check(t *testing.T, want int64) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("calls (done, total): %v", c.calls)
	if c.overlaps > 0 {
		t.Errorf("%d calls overlapped another", c.overlaps)
	}
	if len(c.calls) < 2 {
		t.Fatalf("%d calls, want several for %d bytes: %v", len(c.calls), want, c.calls)
	}
	if max := want/(4<<20) + 16; int64(len(c.calls)) > max {
		t.Errorf("%d calls for %d bytes, want at most %d", len(c.calls), want, max)
	}
	var last int64
	for i, cl := range c.calls {
		done, total := cl[0], cl[1]
		if done < last || done > total {
			t.Errorf("call %d: done %d of %d after done %d", i, done, total, last)
		}
		last = done
	}
	if end := c.calls[len(c.calls)-1]; end[0] != want || end[1] != want {
		t.Errorf("last call (done %d, total %d), want both %d", end[0], end[1], want)
	}
}

// TestCheckpointProgress checkpoints a process holding 80 MiB and follows
// the page data to disk.
func TestCheckpointProgress(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to trace a child and read its /proc entries freely")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	const size = 80 << 20
	// A shell stands for the sandbox init; the job is the process below it.
	cmd := exec.Command("/bin/sh", "-c", `"$0" -c "$1" & wait`, py,
		"import time\nb = b'\\x01' * (80 << 20)\ntime.sleep(1000)")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	init := cmd.Process.Pid
	var job int
	t.Cleanup(func() {
		if job != 0 {
			unix.Kill(job, unix.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if kids, _ := proc.Children(init); len(kids) == 1 {
			job = kids[0]
			if guessPageBytes(job) >= size {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("python3 did not fill %d bytes", size)
		}
	}

	st, err := image.OpenStore(filepath.Join(t.TempDir(), "store"), true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Begin()
	if err != nil {
		t.Fatal(err)
	}
	m := &image.Manifest{}
	log := logrus.New()
	var calls progressCalls
	stats, err := Checkpoint(CheckpointOptions{
		InitPID: init, MainPID: job, Writer: w, Manifest: m, Commit: func() error { return w.Commit(m) },
		Stdio: fds.Stdio{PID: os.Getpid()}, BufferBytes: -1, Progress: calls.record, Log: log,
	})
	if err != nil {
		w.Abort()
		t.Fatal(err)
	}
	if stats.PageBytes < size {
		t.Fatalf("%d bytes of pages, want at least %d", stats.PageBytes, size)
	}
	calls.check(t, stats.MemoryBytes)
}

func TestProgressSettle(t *testing.T) {
	var calls [][2]int64
	p := newProgress(func(done, total int64) { calls = append(calls, [2]int64{done, total}) })
	p.guessProcess(10, 100)
	p.guessProcess(11, 20)
	p.Add(40)
	p.settle(10, 80) // less than guessed: zero pages left out
	p.Add(40)
	p.Add(30) // the guess for 11 fell short: total is held at done
	p.settle(11, 60)
	p.Add(30)
	want := [][2]int64{{40, 120}, {40, 100}, {80, 100}, {110, 110}, {110, 140}, {140, 140}}
	if len(calls) != len(want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("calls %v, want %v", calls, want)
		}
	}
	var none *progress
	none.Add(1) // a nil progress counts nothing
	none.settle(1, 1)
}
