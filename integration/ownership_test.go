package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// nobody is a user other than the job's: the owner of what the test plants.
const nobody = 65534

// TestOthersCannotSteer launches, as the unprivileged user, with hooks
// files and checkpoint directories that another user could change: each
// launch is refused before the job starts, with an error that names the
// path and why.
func TestOthersCannotSteer(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-none", "user-v2")
	tests := []struct {
		name string
		// prepare plants what another user could change and returns the
		// launch options and environment that use it.
		prepare func(t *testing.T, j *job) (opts, env []string)
		want    string
	}{
		{"world-writable hooks file", func(t *testing.T, j *job) ([]string, []string) {
			return []string{"--hooks", plant(t, j.path("hooks.json"), 0o666, 0)}, nil
		}, "others can write it"},
		{"another user's hooks file", func(t *testing.T, j *job) ([]string, []string) {
			return []string{"--hooks", plant(t, j.path("hooks.json"), 0o644, nobody)}, nil
		}, "belongs to uid 65534"},
		{"world-writable site hooks file", func(t *testing.T, j *job) ([]string, []string) {
			return nil, []string{"CKPT_APPTAINER_HOOKS=" + plant(t, j.path("site-hooks.json"), 0o666, 0)}
		}, "others can write it"},
		{"checkpoint directory in another user's directory", func(t *testing.T, j *job) ([]string, []string) {
			d := plantDir(t, j.path("theirs"), 0o777, nobody, nobody)
			j.ckptDir = filepath.Join(d, "ckpt")
			return nil, nil
		}, "can be changed by another user"},
		{"checkpoint directory in a directory another group may write", func(t *testing.T, j *job) ([]string, []string) {
			d := plantDir(t, j.path("project"), 0o775, j.env.uid, nobody)
			j.ckptDir = filepath.Join(d, "ckpt")
			return nil, nil
		}, "can be changed by another user"},
		{"checkpoint directory through another user's symlink in a sticky directory", func(t *testing.T, j *job) ([]string, []string) {
			sticky := plantDir(t, j.path("tmp"), 0o1777, 0, 0)
			real := plantDir(t, j.path("real"), 0o700, j.env.uid, j.env.gid)
			link := filepath.Join(sticky, "ckpt")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(link, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			j.ckptDir = link
			return nil, nil
		}, "symbolic link"},
		{"world-writable checkpoint directory with another user's entry", func(t *testing.T, j *job) ([]string, []string) {
			j.ckptDir = plantDir(t, j.path("open"), 0o777, j.env.uid, j.env.gid)
			latest := filepath.Join(j.ckptDir, "latest")
			if err := os.Symlink("/tmp", latest); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(latest, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			return nil, nil
		}, "its entry latest belongs to uid 65534"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := newJob(t, e, fl)
			opts, env := tt.prepare(t, j)
			j.extraEnv = append(j.extraEnv, env...)
			const log = "job.log"
			s := j.launch(opts, e.progs.counter, j.path(log), "5")
			if code := s.waitExit(cliTimeout); code == 0 {
				t.Fatalf("launch exited 0:\n%s", s.output())
			}
			if !s.outputContains(tt.want) {
				t.Errorf("the refusal does not say %q:\n%s", tt.want, s.output())
			}
			if _, err := os.Stat(j.path(log)); err == nil {
				t.Errorf("the job ran although its launch was refused")
			}
		})
	}
}

// TestCheckpointDirRenamed renames the checkpoint directory under a
// running supervisor and puts a link to another directory in its place:
// the next checkpoint still goes to the directory the supervisor opened,
// never through the link, and the job restores from its new name.
func TestCheckpointDirRenamed(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "user-none")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	s := counterJob(j)
	j.waitLines(s, log, 20)
	j.checkpoint()

	moved := j.path("ckpt-moved")
	if err := os.Rename(j.ckptDir, moved); err != nil {
		t.Fatal(err)
	}
	elsewhere := plantDir(t, j.path("elsewhere"), 0o700, j.env.uid, j.env.gid)
	if err := os.Symlink(elsewhere, j.ckptDir); err != nil {
		t.Fatal(err)
	}
	if fl.user {
		os.Lchown(j.ckptDir, j.env.uid, j.env.gid)
	}
	s.signal(syscall.SIGUSR1) // a checkpoint, as on --signal
	gen2 := filepath.Join(moved, "gen-000002")
	deadline := time.Now().Add(ckptTimeout)
	for {
		if _, err := os.Stat(filepath.Join(gen2, "manifest.json")); err == nil {
			break
		}
		if s.exited() || time.Now().After(deadline) {
			t.Fatalf("no generation 2 in the renamed directory (%s):\n%s", s.status(), s.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("the checkpoint wrote %d entries through the planted link into %s", len(ents), elsewhere)
	}
	s.kill()

	os.Remove(j.ckptDir)
	j.ckptDir = moved
	s = j.restart()
	if got := waitRestored(t, s); got != 2 {
		t.Errorf("restored generation %d, want 2", got)
	}
	s.finish(0, 60*time.Second)
	if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
		t.Fatalf("job log: %v", err)
	}
}

// plant writes a file with mode, owned by uid (0: root).
func plant(t *testing.T, path string, mode os.FileMode, uid int) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(`{"hooks": {}}`), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	return path
}

// plantDir makes a directory with mode (sticky bit included) and owners.
func plantDir(t *testing.T, path string, mode uint32, uid, gid int) string {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}
