package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// commitTestGeneration commits a generation of one process (pid 2, no
// pages) with stats in the checkpoint directory dir, made if need be.
func commitTestGeneration(t *testing.T, dir string, stats image.Stats) *image.Store {
	t.Helper()
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
	if err := w.Commit(&image.Manifest{Processes: []image.ProcessRef{{PID: 2, Core: image.CoreName(2)}}, Stats: stats}); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestCommittedSince: a checkpoint client whose supervisor died after its
// commit learns the generation from the directory.
func TestCommittedSince(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	commit := func() { commitTestGeneration(t, dir, image.Stats{StoppedFor: time.Second}) }
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

func TestRuntimeControlPath(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, runtime string) // makes runtime/ckpt-apptainer as a case needs
		wantErr string
	}{
		{"made when missing", func(*testing.T, string) {}, ""},
		{"private directory kept", func(t *testing.T, rt string) { mkdir(t, filepath.Join(rt, "ckpt-apptainer"), 0o700) }, ""},
		{"directory others can read", func(t *testing.T, rt string) { mkdir(t, filepath.Join(rt, "ckpt-apptainer"), 0o755) }, "only you can use"},
		{"link to a directory", func(t *testing.T, rt string) {
			mkdir(t, filepath.Join(rt, "elsewhere"), 0o700)
			if err := os.Symlink(filepath.Join(rt, "elsewhere"), filepath.Join(rt, "ckpt-apptainer")); err != nil {
				t.Fatal(err)
			}
		}, "not a directory of yours"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := t.TempDir()
			t.Setenv("XDG_RUNTIME_DIR", rt)
			tt.prepare(t, rt)
			ckpt := t.TempDir()
			got, err := runtimeControlPath(ckpt, true)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("runtimeControlPath = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Dir(got) != filepath.Join(rt, "ckpt-apptainer") || len(got) > maxSocketPath {
				t.Errorf("runtimeControlPath = %q: want a short path in %s/ckpt-apptainer", got, rt)
			}
			// The client finds the same path without creating anything;
			// another directory gets another one.
			again, err := runtimeControlPath(ckpt, false)
			if err != nil || again != got {
				t.Errorf("second lookup = %q, %v; want %q", again, err, got)
			}
			if other, _ := runtimeControlPath(t.TempDir(), false); other == got {
				t.Errorf("two checkpoint directories share the socket path %q", got)
			}
		})
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
