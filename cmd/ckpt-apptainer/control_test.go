package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestStartingSupervisor(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	tests := []struct {
		name string
		lock string // lock file content; "" for none
		want int
	}{
		{"this program holds it", fmt.Sprintf("%d %s\n", self, host), self},
		{"no lock file", "", 0},
		{"another program has the pid", fmt.Sprintf("%d %s\n", os.Getppid(), host), 0},
		{"another host", fmt.Sprintf("%d %s-elsewhere\n", self, host), 0},
		{"garbage", "not a holder", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.lock != "" {
				if err := os.WriteFile(filepath.Join(dir, image.LockName), []byte(tc.lock), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := startingSupervisor(dir); got != tc.want {
				t.Errorf("startingSupervisor() = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestCommittedSince: a checkpoint client whose supervisor died after its
// commit learns the generation from the directory.
func TestCommittedSince(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	commit := func() {
		st, err := image.OpenStore(dir, true)
		if err != nil {
			t.Fatal(err)
		}
		w, err := st.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteJSON(image.CoreName(2), &image.Process{PID: 2}); err != nil {
			t.Fatal(err)
		}
		m := &image.Manifest{Processes: []image.ProcessRef{{PID: 2, Core: image.CoreName(2)}}, Stats: image.Stats{StoppedFor: time.Second}}
		if err := w.Commit(m); err != nil {
			t.Fatal(err)
		}
	}
	commit()
	before := newestCommitted(dir)
	if before != 1 || committedSince(dir, before) != nil {
		t.Fatalf("before: newest %d, committedSince %v", before, committedSince(dir, before))
	}
	commit()
	got := committedSince(dir, before)
	if got == nil || got.Generation != 2 || got.Stopped != time.Second || got.Bytes == 0 {
		t.Fatalf("committedSince = %+v, want generation 2 with its figures", got)
	}
}
