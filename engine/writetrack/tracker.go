package writetrack

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Range is a private mapping to track, [Start, End).
type Range struct{ Start, End uint64 }

// Tracker arms write tracking on the processes of one job, checkpoint after
// checkpoint. With UffdWP it holds each process's userfaultfd; Close
// releases them, which ends the write-protection.
type Tracker struct {
	method Method
	mu     sync.Mutex
	uffds  map[int]int // host pid -> the supervisor's copy of its userfaultfd
}

// NewTracker returns a Tracker using m.
func NewTracker(m Method) *Tracker {
	return &Tracker{method: m, uffds: map[int]int{}}
}

// Method is the tracker's method; a nil Tracker tracks nothing.
func (t *Tracker) Method() Method {
	if t == nil {
		return None
	}
	return t.method
}

// NeedsFD says whether arming process hostPID needs a userfaultfd made in
// it first (Adopt).
func (t *Tracker) NeedsFD(hostPID int) bool {
	if t.Method() != UffdWP {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.uffds[hostPID]
	return !ok
}

// Adopt takes fd, the supervisor's copy of a userfaultfd made in process
// hostPID (with UFFD_USER_MODE_ONLY), and enables asynchronous
// write-protection on it. On failure fd is closed.
func (t *Tracker) Adopt(hostPID, fd int) error {
	if err := enableWPAsync(fd); err != nil {
		closeFD(fd)
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.uffds[hostPID]; ok {
		closeFD(old)
	}
	t.uffds[hostPID] = fd
	return nil
}

// Arm makes process hostPID's pages show as unchanged until it writes
// them: soft-dirty bits are cleared; with userfaultfd the mappings are
// registered (those already registered stay so) and the pages of protect
// write-protected. Pages outside protect keep the protection they have: a
// page still protected was not written since it was protected, so after a
// dump that read only the written pages, protecting those again is enough.
// An error means some pages will read as written, not that a write could
// be missed.
func (t *Tracker) Arm(hostPID int, mappings, protect []Range) error {
	switch t.Method() {
	case SoftDirty:
		return clearSoftDirty(hostPID)
	case UffdWP:
		t.mu.Lock()
		fd, ok := t.uffds[hostPID]
		t.mu.Unlock()
		if !ok {
			return fmt.Errorf("pid %d has no userfaultfd", hostPID)
		}
		return t.protect(hostPID, fd, mappings, protect)
	}
	return errors.New("no write tracking")
}

// protect registers the mappings and write-protects the ranges of
// protect. The process's address space may have gone (it exec'd or
// exited): the userfaultfd then belongs to no one, and is let go.
func (t *Tracker) protect(hostPID, fd int, mappings, protect []Range) error {
	var failed []error
	gone := func(err error) bool {
		if errors.Is(err, errESRCH) {
			t.Forget(hostPID)
			return true
		}
		return false
	}
	for _, r := range mappings {
		if err := register(fd, r); gone(err) {
			return fmt.Errorf("pid %d: the address space its userfaultfd was made for is gone", hostPID)
		} else if err != nil {
			failed = append(failed, fmt.Errorf("%#x-%#x: %w", r.Start, r.End, err))
		}
	}
	for _, r := range protect {
		if err := writeProtect(fd, r); gone(err) {
			return fmt.Errorf("pid %d: the address space its userfaultfd was made for is gone", hostPID)
		} else if err != nil && len(failed) < 8 {
			// Pages of a mapping that failed to register fail here
			// too: the first few say enough.
			failed = append(failed, fmt.Errorf("%#x-%#x: %w", r.Start, r.End, err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("pid %d: write-protection failed, some pages read as written: %w", hostPID, errors.Join(failed...))
	}
	return nil
}

// Forget lets go of process hostPID's userfaultfd.
func (t *Tracker) Forget(hostPID int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if fd, ok := t.uffds[hostPID]; ok {
		closeFD(fd)
		delete(t.uffds, hostPID)
	}
}

// Keep lets go of the userfaultfds of every process not in alive.
func (t *Tracker) Keep(alive map[int]bool) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for pid, fd := range t.uffds {
		if !alive[pid] {
			closeFD(fd)
			delete(t.uffds, pid)
		}
	}
}

// Close lets go of every userfaultfd: the job runs on without
// write-protection.
func (t *Tracker) Close() {
	t.Keep(nil)
}

// clearSoftDirty clears the soft-dirty bits of every page of the process
// (clear_refs "4"): the pages it writes from now on show the bit again.
func clearSoftDirty(hostPID int) error {
	path := fmt.Sprintf("/proc/%d/clear_refs", hostPID)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("clear soft-dirty bits: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString("4"); err != nil {
		return fmt.Errorf("clear soft-dirty bits: write %s: %w", path, err)
	}
	return nil
}
