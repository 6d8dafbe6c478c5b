package engine

import (
	"strconv"
	"sync"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// ProgressFunc receives how far the page data of a checkpoint or a restore
// has come: done bytes of total. See CheckpointOptions.Progress and
// RestoreOptions.Progress.
type ProgressFunc func(done, total int64)

// progress counts page bytes for a ProgressFunc. It is called from the
// page writers of several processes at once and calls fn one call at a
// time. A nil *progress counts nothing.
//
// Calls come once per batch of page data (pageBatch, fillChunk: 32 MiB or
// the rest of a process's pages), never per page, so the cost is one lock
// and one call per batch.
type progress struct {
	fn ProgressFunc

	// mu protects below and serialises calls of fn.
	mu          sync.Mutex
	done, total int64
	// guess is a checkpoint's estimate of the page bytes of each process
	// (host pid) whose memory has not been read yet; total includes it
	// until settle replaces it with the bytes actually dumped.
	guess map[int]int64
}

func newProgress(fn ProgressFunc) *progress {
	if fn == nil {
		return nil
	}
	return &progress{fn: fn, guess: map[int]int64{}}
}

// expect adds n bytes to the total.
func (p *progress) expect(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += n
}

// guessProcess counts an estimate of the page bytes of the process with
// host pid pid into the total, until settle gives the exact figure.
func (p *progress) guessProcess(pid int, n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += n - p.guess[pid]
	p.guess[pid] = n
}

// settle replaces the estimate for the process with host pid pid with
// the page bytes its dump holds, once its memory has been read.
func (p *progress) settle(pid int, exact int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total += exact - p.guess[pid]
	delete(p.guess, pid)
	p.reportLocked()
}

// Add counts n more bytes written (checkpoint) or restored.
func (p *progress) Add(n int64) {
	if p == nil || n == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	p.reportLocked()
}

// reportLocked calls fn with the current figures. An estimate that fell
// short never shows more done than expected.
// Precondition: p.mu is held.
func (p *progress) reportLocked() {
	p.fn(p.done, max(p.total, p.done))
}

// guessPageBytes estimates how much page data a checkpoint of the stopped
// process pid writes: its resident and swapped-out anonymous memory, which
// the kernel keeps counters of (reading them walks no page table). Pages
// that are all zero, shared memory and private copies in deleted files make
// the real figure differ; settle corrects it per process.
func guessPageBytes(pid int) int64 {
	st, err := proc.ReadStatus(strconv.Itoa(pid))
	if err != nil {
		return 0
	}
	return st.Bytes("RssAnon") + st.Bytes("VmSwap")
}
