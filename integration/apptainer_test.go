package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Container jobs are not checkpointed yet: these tests pin down what already
// holds, that an Apptainer job runs unchanged under the supervisor's sandbox
// (its own user, PID and mount namespaces) with its exit status passed
// through, and that a checkpoint of it is refused without harming it.

var (
	sifOnce   sync.Once
	sifPath   string
	sifReason string
	sifErr    error
)

// requireApptainer skips the test when Apptainer cannot run here, except
// when CKPT_REQUIRE_APPTAINER (or CI) asks for it: then it fails.
func requireApptainer(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CKPT_REQUIRE_APPTAINER") != "" || os.Getenv("CI") != "" {
		t.Fatalf("Apptainer is required (CKPT_REQUIRE_APPTAINER/CI): "+format, args...)
	}
	t.Skipf(format, args...)
}

// busyboxImage builds, once per run, a SIF from a busybox root file system
// with a marker file, offline, in a directory every test user can read.
func busyboxImage(t *testing.T) string {
	t.Helper()
	sifOnce.Do(func() {
		if _, err := exec.LookPath("apptainer"); err != nil {
			sifReason = "apptainer not installed (scripts/install-deps.sh)"
			return
		}
		bb, err := exec.LookPath("busybox")
		if err != nil {
			sifReason = "busybox not installed (scripts/install-deps.sh)"
			return
		}
		dir, err := os.MkdirTemp("", "ckpt-it-sif-")
		if err != nil {
			sifErr = err
			return
		}
		os.Chmod(dir, 0o755)
		root := filepath.Join(dir, "rootfs")
		for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root", "home"} {
			if sifErr = os.MkdirAll(filepath.Join(root, d), 0o755); sifErr != nil {
				return
			}
		}
		if sifErr = copyFile(bb, filepath.Join(root, "bin", "busybox"), 0o755); sifErr != nil {
			return
		}
		for _, app := range []string{"sh", "echo", "cat", "sleep"} {
			if sifErr = os.Symlink("busybox", filepath.Join(root, "bin", app)); sifErr != nil {
				return
			}
		}
		if sifErr = os.WriteFile(filepath.Join(root, "etc", "ckpt-marker"), []byte("inside-the-image\n"), 0o644); sifErr != nil {
			return
		}
		sif := filepath.Join(dir, "busybox.sif")
		out, err := exec.Command("apptainer", "build", "-F", sif, root).CombinedOutput()
		if err != nil {
			sifErr = fmt.Errorf("apptainer build: %v\n%s", err, out)
			return
		}
		os.Chmod(sif, 0o644)
		sifPath = sif
	})
	if sifReason != "" {
		requireApptainer(t, "%s", sifReason)
	}
	if sifErr != nil {
		t.Fatalf("build the test image: %v", sifErr)
	}
	return sifPath
}

// apptainerArgv is the apptainer command line for the flavor: root needs
// --userns here (no CAP_SYS_RESOURCE for the setuid-style path).
func apptainerArgv(fl flavor, sif string, cmd ...string) []string {
	argv := []string{"apptainer", "exec"}
	if !fl.user {
		argv = append(argv, "--userns")
	}
	return append(append(argv, sif), cmd...)
}

// TestApptainerJobRunsInSandbox runs as the unprivileged user, the normal
// case on clusters, and as root with --userns (root keeps its capabilities
// inside the job's user namespace, which Apptainer needs for its own).
func TestApptainerJobRunsInSandbox(t *testing.T) {
	e := setup(t)
	sif := busyboxImage(t)
	for _, name := range []string{"user-v2", "user-v1", "user-none", "root-v2", "root-none"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			s := j.launch(nil, apptainerArgv(fl, sif, "sh", "-c", "cat /etc/ckpt-marker; exit 7")...)
			s.finish(7, 60*time.Second)
			if !s.outputContains("inside-the-image") {
				t.Fatalf("the container's output did not reach the job's stdout:\n%s", s.output())
			}
		})
	}
}

// TestApptainerCheckpointRefusedJobRunsOn: an Apptainer command line that
// cannot be checkpointed (--writable-tmpfs: the container's writable layer
// is a tmpfs that a restart cannot give back) still runs; each checkpoint
// is refused with the reason, and the job goes on.
func TestApptainerCheckpointRefusedJobRunsOn(t *testing.T) {
	e := setup(t)
	sif := busyboxImage(t)
	fl := e.pickFlavor(t, "user-v2", "user-none")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	log := j.path("ticks")
	argv := apptainerArgv(fl, sif, "sh", "-c",
		fmt.Sprintf("i=0; while true; do i=$((i+1)); echo $i >> %s; sleep 0.1; done", log))
	argv = append([]string{argv[0], argv[1], "--writable-tmpfs"}, argv[2:]...)
	s := j.launch(nil, argv...)
	j.waitLines(s, "ticks", 3)
	code, out, errOut := j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
	if code == 0 {
		t.Fatalf("checkpoint of an Apptainer job with --writable-tmpfs succeeded:\n%s%s", out, errOut)
	}
	if !strings.Contains(out+errOut, "writable-tmpfs") {
		t.Errorf("the refusal does not name the option:\n%s%s", out, errOut)
	}
	before := j.lines("ticks")
	j.waitLines(s, "ticks", before+3)
	if s.exited() {
		t.Fatalf("supervisor ended (%s) after a refused checkpoint:\n%s", s.status(), s.output())
	}
	s.kill()
}

// TestApptainerInstanceRefused: instances are not supported yet; launching
// one under the supervisor and checkpointing one by name both say so
// instead of losing the instance silently.
func TestApptainerInstanceRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := busyboxImage(t)
	fl := e.pickFlavor(t, "user-v2", "user-none")
	j := newJob(t, e, fl)
	s := j.launch(nil, "apptainer", "instance", "start", sif, "ckpt-refused")
	if code := s.waitExit(cliTimeout); code == 0 {
		t.Fatalf("launch of an instance succeeded:\n%s", s.output())
	}
	if !strings.Contains(s.output(), "instances are not supported yet") {
		t.Errorf("the refusal does not say instances are unsupported:\n%s", s.output())
	}
	code, out, errOut := j.cli("checkpoint", "--instance", "ckpt-refused")
	if code == 0 || !strings.Contains(out+errOut, "instances are not supported yet") {
		t.Errorf("checkpoint --instance: exit %d, output:\n%s%s", code, out, errOut)
	}
}
