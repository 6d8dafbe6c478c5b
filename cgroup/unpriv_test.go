package cgroup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv selects a helper mode when the test binary is re-executed as
// an unprivileged user; the modes are in runHelper.
const helperEnv = "CKPT_CGROUP_TEST_HELPER"

// nobody is the unprivileged user the helper runs as.
const nobody = 65534

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Getenv("CKPT_CGROUP_TEST_ARG")); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		fmt.Println("helper ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper runs as nobody. "nowritable" expects ErrNoWritableCgroup
// (with arg as the explicit parent, or none); "parent", "env" and "own"
// create the job cgroup under a delegated directory (given explicitly,
// through the environment, or as the helper's own cgroup) and freeze,
// thaw and remove it with a child process inside.
func runHelper(mode, arg string) error {
	switch mode {
	case "nowritable":
		c, err := Create(Options{Parent: arg, Name: "job"})
		if err == nil {
			_ = c.Remove()
			return fmt.Errorf("Create as uid %d succeeded at %s", os.Getuid(), c.Path())
		}
		if !errors.Is(err, ErrNoWritableCgroup) {
			return fmt.Errorf("Create: %w, want ErrNoWritableCgroup", err)
		}
		fmt.Println(err)
		return nil
	case "parent", "env", "own":
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	opts := Options{Name: "job-" + mode}
	if mode == "parent" {
		opts.Parent = arg
	}
	c, err := Create(opts)
	if err != nil {
		return err
	}
	defer c.Remove()
	if got := filepath.Dir(c.Path()); got != arg {
		return fmt.Errorf("job cgroup %s is not under the delegated %s", c.Path(), arg)
	}
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	if err := c.AddProc(cmd.Process.Pid); err != nil {
		return err
	}
	if pids, err := c.Procs(); err != nil || !slices.Equal(pids, []int{cmd.Process.Pid}) {
		return fmt.Errorf("Procs() = %v, %v", pids, err)
	}
	if err := c.Freeze(5 * time.Second); err != nil {
		return err
	}
	if err := c.Thaw(); err != nil {
		return err
	}
	return c.Remove()
}

// helperBinary copies the test binary where nobody can execute it.
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent directory is private to root.
	dir, err := os.MkdirTemp("", "ckpt-cgroup-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "cgroup.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// delegate hands dir to nobody the way systemd's Delegate=yes does.
func delegate(t *testing.T, dir string) {
	t.Helper()
	for _, p := range []string{dir, "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} {
		if p != dir {
			p = filepath.Join(dir, p)
		}
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnprivileged(t *testing.T) {
	requireRoot(t)
	bin := helperBinary(t)
	rootOwned := scratchParent(t, V2)
	delegated := scratchParent(t, V2)
	delegate(t, delegated)
	tests := []struct {
		name      string
		mode, arg string
		// env is $CKPT_APPTAINER_CGROUP_PARENT for the helper.
		env string
		// inDelegated starts the helper inside the delegated cgroup.
		inDelegated bool
	}{
		{name: "own cgroup not delegated", mode: "nowritable"},
		{name: "root-owned parent", mode: "nowritable", arg: rootOwned},
		{name: "root-owned parent from env", mode: "nowritable", env: rootOwned},
		{name: "delegated parent", mode: "parent", arg: delegated, inDelegated: true},
		{name: "delegated parent from env", mode: "env", arg: delegated, env: delegated, inDelegated: true},
		{name: "delegated own cgroup", mode: "own", arg: delegated, inDelegated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin, "-test.run=^$")
			cmd.Dir = "/"
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), helperEnv + "=" + tt.mode, "CKPT_CGROUP_TEST_ARG=" + tt.arg}
			if tt.env != "" {
				cmd.Env = append(cmd.Env, EnvParent+"="+tt.env)
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			if tt.inDelegated {
				// Moving a task needs write access to cgroup.procs of
				// the common ancestor, so the helper must start inside
				// the delegated subtree, as a job step would.
				f, err := os.Open(tt.arg)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.SysProcAttr.UseCgroupFD = true
				cmd.SysProcAttr.CgroupFD = int(f.Fd())
			}
			out, err := cmd.CombinedOutput()
			t.Logf("helper output: %s", strings.TrimSpace(string(out)))
			if err != nil {
				t.Fatalf("helper %s failed: %v", tt.mode, err)
			}
			if tt.inDelegated {
				if _, err := os.Stat(filepath.Join(tt.arg, "job-"+tt.mode)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("job cgroup left behind: %v", err)
				}
			}
		})
	}
}
