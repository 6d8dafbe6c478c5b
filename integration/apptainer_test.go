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

// The basics of Apptainer jobs under the supervisor: an Apptainer job runs
// unchanged under the sandbox (its own user, PID and mount namespaces)
// with its exit status passed through, and a checkpoint the tool refuses
// leaves it running.

// requireApptainer skips the test when Apptainer cannot run here, except
// when CKPT_REQUIRE_APPTAINER (or CI) asks for it: then it fails.
func requireApptainer(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CKPT_REQUIRE_APPTAINER") != "" || os.Getenv("CI") != "" {
		t.Fatalf("Apptainer is required (CKPT_REQUIRE_APPTAINER/CI): "+format, args...)
	}
	t.Skipf(format, args...)
}

// busyboxSIF is a SIF built once per run, offline, from a busybox root
// file system with a marker file and the files of extra (path in the
// image: contents, executable), in a directory every test user can read.
type busyboxSIF struct {
	name  string
	extra map[string]string
	// prepare, when set, adds to the root file system before the build.
	prepare func(root string) error

	once   sync.Once
	path   string
	reason string
	err    error
}

var (
	plainSIF = &busyboxSIF{name: "busybox.sif"}
	// instanceSIF's startscript runs instance.sh from the directory bound
	// at /data: an instance runs its startscript, not a command.
	instanceSIF = &busyboxSIF{name: "instance.sif", extra: map[string]string{
		".singularity.d/startscript": "#!/bin/sh\nexec /bin/sh " + containerData + "/instance.sh\n",
	}}
)

// mpiSIF holds MPICH's mpiexec and proxy, the ring program (at
// /opt/mpiring) and the libraries they load: MPI inside the image. Its
// prepare runs once buildMPI has built the program.
var mpiSIF = &busyboxSIF{name: "mpi.sif", prepare: func(root string) error {
	for _, f := range []string{"/usr/bin/mpiexec.hydra", "/usr/bin/hydra_pmi_proxy"} {
		if err := copyWithLibraries(f, root, f); err != nil {
			return err
		}
	}
	if err := os.Symlink("mpiexec.hydra", filepath.Join(root, "usr/bin/mpiexec")); err != nil {
		return err
	}
	return copyWithLibraries(mpiring, root, "/opt/mpiring")
}}

// copyWithLibraries copies the program src to dst under root, and every
// shared library ldd says it loads to its own path under root.
func copyWithLibraries(src, root, dst string) error {
	out, err := exec.Command("ldd", src).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", src, err)
	}
	files := map[string]string{dst: src}
	for _, field := range strings.Fields(string(out)) {
		if strings.HasPrefix(field, "/") {
			files[field] = field
		}
	}
	for to, from := range files {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(to)), 0o755); err != nil {
			return err
		}
		if err := copyFile(from, filepath.Join(root, to), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func busyboxImage(t *testing.T) string  { return plainSIF.get(t) }
func instanceImage(t *testing.T) string { return instanceSIF.get(t) }

func (b *busyboxSIF) get(t *testing.T) string {
	t.Helper()
	b.once.Do(b.build)
	if b.reason != "" {
		requireApptainer(t, "%s", b.reason)
	}
	if b.err != nil {
		t.Fatalf("build the test image %s: %v", b.name, b.err)
	}
	return b.path
}

func (b *busyboxSIF) build() {
	if _, err := exec.LookPath("apptainer"); err != nil {
		b.reason = "apptainer not installed (scripts/install-deps.sh)"
		return
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		b.reason = "busybox not installed (scripts/install-deps.sh)"
		return
	}
	dir, err := os.MkdirTemp("", "ckpt-it-sif-")
	if err != nil {
		b.err = err
		return
	}
	os.Chmod(dir, 0o755)
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root", "home"} {
		if b.err = os.MkdirAll(filepath.Join(root, d), 0o755); b.err != nil {
			return
		}
	}
	if b.err = copyFile(bb, filepath.Join(root, "bin", "busybox"), 0o755); b.err != nil {
		return
	}
	for _, app := range []string{"sh", "echo", "cat", "sleep"} {
		if b.err = os.Symlink("busybox", filepath.Join(root, "bin", app)); b.err != nil {
			return
		}
	}
	if b.prepare != nil {
		if b.err = b.prepare(root); b.err != nil {
			return
		}
	}
	files := map[string]string{"etc/ckpt-marker": "inside-the-image\n"}
	for name, body := range b.extra {
		files[name] = body
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if b.err = os.MkdirAll(filepath.Dir(p), 0o755); b.err != nil {
			return
		}
		if b.err = os.WriteFile(p, []byte(body), 0o755); b.err != nil {
			return
		}
	}
	sif := filepath.Join(dir, b.name)
	out, err := exec.Command("apptainer", "build", "-F", sif, root).CombinedOutput()
	if err != nil {
		b.err = fmt.Errorf("apptainer build: %v\n%s", err, out)
		return
	}
	os.Chmod(sif, 0o644)
	b.path = sif
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
