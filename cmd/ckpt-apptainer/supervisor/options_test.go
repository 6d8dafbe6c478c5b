package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// TestBadOptionsRefused checks that settings a user can get wrong are
// refused with an error naming them, before any job is started.
func TestBadOptionsRefused(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		argv []string
		want string
	}{
		{"no command", Options{LocalLimit: "1GiB"}, nil, "no command given"},
		{"negative interval", Options{Interval: -5 * time.Second, LocalLimit: "1GiB"}, []string{"true"}, "--interval -5s"},
		{"unreadable size", Options{LocalLimit: "lots"}, []string{"true"}, `--local-limit "lots"`},
		{"unknown signal", Options{LocalLimit: "1GiB", Signal: "NOPE"}, []string{"true"}, "NOPE"},
		{"missing hooks file", Options{LocalLimit: "1GiB", Hooks: "/nonexistent/hooks.json"}, []string{"true"}, "/nonexistent/hooks.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.CkptDir = t.TempDir()
			err := Launch(tt.opts, tt.argv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Launch: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// TestRestartRefusals checks the restarts refused before anything is
// restored: each says why and what to do, and a refused restart leaves no
// file behind.
func TestRestartRefusals(t *testing.T) {
	commitOne := func(t *testing.T, dir string) *image.Store { return commitTestGeneration(t, dir, image.Stats{}) }
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // nil: dir does not exist
		gen   string
		want  []string
	}{
		{"no directory", nil, "", []string{"does not exist", "ckpt-apptainer run"}},
		{"empty directory", func(t *testing.T, dir string) { os.Mkdir(dir, 0o700) }, "", []string{"no checkpoint in", "--ckpt-dir"}},
		{"generation not a number", func(t *testing.T, dir string) { commitOne(t, dir) }, "latest", []string{"generation number (2) or directory name (gen-000002)", `"latest"`}},
		{"generation that is not there", func(t *testing.T, dir string) { commitOne(t, dir) }, "99", []string{"generation 99 does not exist", "which holds generations 1"}},
		{"directory name that is not there", func(t *testing.T, dir string) { commitOne(t, dir) }, "gen-000007/", []string{"generation 7 does not exist"}},
		{"finished job", func(t *testing.T, dir string) {
			st := commitOne(t, dir)
			if err := st.MarkFinished(image.Finished{Time: time.Now(), ExitCode: 3, Argv: []string{"app"}}); err != nil {
				t.Fatal(err)
			}
		}, "", []string{"finished at", "exit code 3", "restart --force"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ckpt")
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			before := dirEntries(dir)
			err := Restart(Options{CkptDir: dir, LocalLimit: "1GiB"}, tc.gen)
			if err == nil {
				t.Fatal("restart did not fail")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			after := dirEntries(dir)
			if slices.Contains(before, "latest") {
				// The lock of a job's own directory stays there.
				after = slices.DeleteFunc(after, func(n string) bool { return n == ".lock" })
			}
			if !slices.Equal(before, after) {
				t.Errorf("the refused restart changed the directory: %v, then %v", before, after)
			}
		})
	}
}

// dirEntries names what dir holds; nil when it does not exist.
func dirEntries(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
