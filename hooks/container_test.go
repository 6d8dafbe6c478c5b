package hooks

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestContainerCommand(t *testing.T) {
	h := Hook{Container: true}
	h.Path, h.Args = "/app/bin/resume", []string{"resume", "--now"}

	if _, err := containerCommand(h, 0); err == nil || !strings.Contains(err.Error(), "no job process") {
		t.Errorf("no target: error %v, want one saying no job process runs", err)
	}

	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("no nsenter here:", err)
	}
	// A target that shares every namespace: nothing to join, no chroot.
	cmd, err := containerCommand(h, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"nsenter", "--target", strconv.Itoa(os.Getpid()), "--wd", "--", "/app/bin/resume", "--now"}
	if !reflect.DeepEqual(cmd.Args, want) {
		t.Errorf("argv %q, want %q", cmd.Args, want)
	}

	t.Setenv("PATH", t.TempDir())
	if _, err := containerCommand(h, os.Getpid()); err == nil || !strings.Contains(err.Error(), "nsenter (util-linux) in PATH") {
		t.Errorf("no nsenter: error %v, want one naming nsenter", err)
	}
}

// nsTarget starts `unshare -Urpf --mount-proc CMD...` in cwd, where CMD
// ends up exec'ing sleep, and returns the host pid of the sleep, which runs
// in user, PID and mount namespaces of its own. It skips the test only
// where such namespaces cannot be made.
func nsTarget(t *testing.T, cwd string, command ...string) int {
	t.Helper()
	for _, tool := range []string{"unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s here: %v", tool, err)
		}
	}
	if out, err := exec.Command("unshare", "-Urpf", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot create user, PID and mount namespaces here: %v: %s", err, out)
	}
	cmd := exec.Command("unshare", append([]string{"-Urpf", "--mount-proc", "--kill-child"}, command...)...)
	cmd.Dir = cwd
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	upid := strconv.Itoa(cmd.Process.Pid)
	for range 500 {
		children, _ := os.ReadFile("/proc/" + upid + "/task/" + upid + "/children")
		if f := strings.Fields(string(children)); len(f) > 0 {
			if comm, _ := os.ReadFile("/proc/" + f[0] + "/comm"); string(comm) == "sleep\n" {
				pid, err := strconv.Atoi(f[0])
				if err != nil {
					t.Fatal(err)
				}
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the sleep in the new namespaces did not start")
	return 0
}

// nsOf returns the namespace links of process pid ("self" for the caller).
func nsOf(t *testing.T, pid string) map[string]string {
	t.Helper()
	ns := map[string]string{}
	for _, kind := range []string{"pid", "user", "mnt"} {
		link, err := os.Readlink("/proc/" + pid + "/ns/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		ns[kind] = link
	}
	return ns
}

func TestContainerHookEntersNamespaces(t *testing.T) {
	// The second target is what an Apptainer container in the job
	// sandbox looks like: a user and mount namespace nested in the
	// sandbox's, both owned by the caller.
	for _, target := range []struct {
		name    string
		command []string
	}{
		{"sandbox", []string{"sleep", "60"}},
		{"nested", []string{"unshare", "-Urm", "sleep", "60"}},
	} {
		t.Run(target.name, func(t *testing.T) {
			cwd := t.TempDir()
			pid := nsTarget(t, cwd, target.command...)
			testContainerHook(t, cwd, pid)
			t.Run("timeout", func(t *testing.T) { testContainerHookTimeout(t, pid) })
		})
	}
}

// testContainerHook runs a container hook into process target, whose
// working directory is cwd, and checks where it ran.
func testContainerHook(t *testing.T, cwd string, target int) {
	want := nsOf(t, strconv.Itoa(target))
	if self := nsOf(t, "self"); self["pid"] == want["pid"] || self["user"] == want["user"] || self["mnt"] == want["mnt"] {
		t.Fatalf("target shares namespaces with the test: %v vs %v", want, self)
	}

	// The hook reports its namespaces, its pid, working directory and
	// argv as it sees them.
	const script = `for ns in pid user mnt; do echo "ns-$ns $(readlink /proc/self/ns/$ns)"; done > "$OUT/seen"
echo "pid $$" >> "$OUT/seen"
echo "cwd $(pwd -P)" >> "$OUT/seen"
echo "argv0 $(tr '\0' '\n' < /proc/$$/cmdline | head -n 1)" >> "$OUT/seen"
echo hello from inside`
	for _, tt := range []struct {
		name  string
		state State
	}{
		{"State.PID", State{PID: target}},
		{"State.Container.AppPID", State{PID: os.Getpid(), Container: &Container{AppPID: target}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			h := Hook{Container: true, Source: "test.json"}
			h.Path, h.Args, h.Env = "/bin/sh", []string{"ignored", "-c", script}, []string{"OUT=" + dir}
			log, entries := quietLog()
			results, err := Run(context.Background(), log, Postrestore, []Hook{h}, tt.state)
			if err != nil {
				t.Fatal(err)
			}
			if len(results) != 1 || !strings.Contains(results[0].Output, "hello from inside") {
				t.Errorf("results %+v, want the hook's output", results)
			}
			if e := entries.LastEntry(); e == nil || e.Message != "postrestore hook sh: hello from inside" {
				t.Errorf("last log entry %v, want the hook's output line", e)
			}
			data, err := os.ReadFile(filepath.Join(dir, "seen"))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				k, v, _ := strings.Cut(line, " ")
				seen[k] = v
			}
			for kind, link := range want {
				if seen["ns-"+kind] != link {
					t.Errorf("hook's %s namespace %q, want the target's %q", kind, seen["ns-"+kind], link)
				}
			}
			// The target is PID 1 of its namespace; the hook comes soon after.
			if pid, err := strconv.Atoi(seen["pid"]); err != nil || pid <= 1 || pid > 100 {
				t.Errorf("hook's pid %q, want a small pid in the target's PID namespace", seen["pid"])
			}
			if seen["cwd"] != cwd {
				t.Errorf("hook's working directory %q, want the target's %q", seen["cwd"], cwd)
			}
			if seen["argv0"] != h.Path {
				t.Errorf("hook's argv[0] %q, want its path %q (nsenter passes no program name)", seen["argv0"], h.Path)
			}
		})
	}
}

// testContainerHookTimeout runs a container hook into process target that
// starts a child and hangs; once it timed out, nothing of it may be left
// in target's PID namespace.
func testContainerHookTimeout(t *testing.T, target int) {
	h := Hook{Container: true, Source: "test.json"}
	h.Path, h.Args = "/bin/sh", []string{"sh", "-c", "sleep 1000 & echo started; sleep 1000"}
	h.Timeout = new(1)
	log, _ := quietLog()
	_, err := Run(context.Background(), log, Postcheckpoint, []Hook{h}, State{PID: target})
	if !errors.Is(err, ErrTimedOut) || !strings.Contains(err.Error(), `timed out after 1s; output: "started"`) {
		t.Errorf("error %v, want a timeout after 1s with the output", err)
	}
	pidNS := nsOf(t, strconv.Itoa(target))["pid"]
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == target {
			continue
		}
		if link, _ := os.Readlink("/proc/" + e.Name() + "/ns/pid"); link == pidNS && !gone(pid) {
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			t.Errorf("process %d (%q) of the hook still runs in the namespace", pid, cmdline)
		}
	}
}

func TestContainerHookNoProcess(t *testing.T) {
	h := Hook{Container: true, Source: "test.json"}
	h.Path, h.Args = "/bin/true", []string{"true"}
	log, _ := quietLog()
	results, err := Run(context.Background(), log, Postcheckpoint, []Hook{h}, State{Status: "stopped"})
	if err == nil || !strings.Contains(err.Error(), "postcheckpoint hook /bin/true (test.json): container hook: no job process runs") {
		t.Errorf("error %v, want one saying there is no process to enter", err)
	}
	if len(results) != 1 || results[0].ExitCode != -1 {
		t.Errorf("results %+v, want one with exit code -1", results)
	}
}
