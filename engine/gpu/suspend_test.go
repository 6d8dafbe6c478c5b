package gpu

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestSuspendAndResume runs the lock, checkpoint, restore and unlock
// sequence over three processes with each step failing in turn, and checks
// that the job always ends on the GPU with every process unlocked, or
// that the error says which process could not be put back.
func TestSuspendAndResume(t *testing.T) {
	tests := []struct {
		fail       string
		suspendErr string // "" when Suspend succeeds
		resumeErr  string // "" when Resume (or the undo) succeeds
		wantState  map[int]State
	}{
		{"", "", "", map[int]State{1: Running, 2: Running, 3: Running}},
		{"lock 2", "GPU process 2: lock", "", map[int]State{1: Running, 2: Running, 3: Running}},
		{"checkpoint 3", "GPU process 3: checkpoint", "", map[int]State{1: Running, 2: Running, 3: Running}},
		{"restore 2", "", "GPU process 2: restore", map[int]State{1: Running, 2: Checkpointed, 3: Running}},
		{"unlock 1", "", "GPU process 1: unlock", map[int]State{1: Locked, 2: Running, 3: Running}},
	}
	for _, tt := range tests {
		t.Run("fail "+tt.fail, func(t *testing.T) {
			d := newFakeDriver(1, 2, 3)
			if tt.fail != "" {
				d.fail[tt.fail] = true
			}
			s, err := Suspend(d, []int{1, 2, 3}, DefaultLockTimeout)
			if tt.suspendErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.suspendErr) {
					t.Fatalf("Suspend: %v, want an error saying %q", err, tt.suspendErr)
				}
			} else {
				if err != nil {
					t.Fatalf("Suspend: %v", err)
				}
				for pid, st := range d.state {
					if st != Checkpointed {
						t.Fatalf("after Suspend, process %d is %v", pid, st)
					}
				}
				err = s.Resume()
				if tt.resumeErr == "" && err != nil || tt.resumeErr != "" && (err == nil || !strings.Contains(err.Error(), tt.resumeErr)) {
					t.Fatalf("Resume: %v, want an error saying %q", err, tt.resumeErr)
				}
			}
			for pid, want := range tt.wantState {
				if d.state[pid] != want {
					t.Errorf("process %d ends %v, want %v (operations %v)", pid, d.state[pid], want, d.ops)
				}
			}
		})
	}
}

// TestSuspendLocksAllFirst checks that no process is checkpointed before
// every one is locked.
func TestSuspendLocksAllFirst(t *testing.T) {
	d := newFakeDriver(1, 2)
	if _, err := Suspend(d, []int{1, 2}, DefaultLockTimeout); err != nil {
		t.Fatal(err)
	}
	want := "lock 1,lock 2,checkpoint 1,checkpoint 2"
	if got := strings.Join(d.ops, ","); got != want {
		t.Errorf("operations %s, want %s", got, want)
	}
}

// TestSuspendSkipsNonCUDA leaves out a process the driver does not know
// (it inherited a CUDA parent's descriptors), and does not fail for it.
func TestSuspendSkipsNonCUDA(t *testing.T) {
	d := newFakeDriver(1)
	s, err := Suspend(d, []int{1, 9}, DefaultLockTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Timings) != 1 || s.Timings[0].PID != 1 || len(s.Skipped) != 1 || s.Skipped[0].PID != 9 {
		t.Errorf("suspended %+v, skipped %+v; want 1 suspended and 9 skipped", s.Timings, s.Skipped)
	}
	if err := s.Resume(); err != nil || d.state[1] != Running {
		t.Errorf("Resume: %v, process 1 %v", err, d.state[1])
	}
}

// TestRestoredResume puts restored processes (checkpointed, under new
// pids) back on the GPU.
func TestRestoredResume(t *testing.T) {
	d := newFakeDriver()
	d.state[7], d.state[8] = Checkpointed, Checkpointed
	moved := []Pair{{Old: "GPU-aaaa", New: "GPU-bbbb"}}
	if err := Restored(d, []int{7, 8}, moved).Resume(); err != nil {
		t.Fatal(err)
	}
	if len(d.pairs) != 1 || d.pairs[0] != moved[0] {
		t.Errorf("restored with pairs %v, want %v", d.pairs, moved)
	}
	if d.state[7] != Running || d.state[8] != Running {
		t.Errorf("states %v after Resume, want both running", d.state)
	}
}

// TestResumePassesOverExited checks that a process that exited after
// Suspend (a short-lived child), which the driver then fails for, does not
// fail Resume; a live one the driver fails for still does.
func TestResumePassesOverExited(t *testing.T) {
	const exited = 1 << 30 // no such process
	d := newFakeDriver(exited)
	d.fail[fmt.Sprintf("restore %d", exited)] = true
	s, err := Suspend(d, []int{exited}, DefaultLockTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(); err != nil {
		t.Errorf("Resume failed for a process that has exited: %v", err)
	}
	self := os.Getpid()
	d = newFakeDriver(self)
	d.fail[fmt.Sprintf("restore %d", self)] = true
	if s, err = Suspend(d, []int{self}, DefaultLockTimeout); err != nil {
		t.Fatal(err)
	}
	if err := s.Resume(); err == nil {
		t.Error("Resume passed over a live process the driver failed to restore")
	}
}
