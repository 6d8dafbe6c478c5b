package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestContainerSysVIPC runs the suite's System V IPC programs (a parent and
// a child sharing a segment, a semaphore set, a message queue) in a
// container: with --containall Apptainer gives the application an IPC
// namespace of its own, whose objects must be dumped and re-created there,
// not in the sandbox's. The programs are built statically on the host and
// bound in with the job's data.
func TestContainerSysVIPC(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := busyboxImage(t)
	fl := e.flavorNamed(t, "user-v2")
	for _, prog := range []string{"sysv_shm", "sysv_sem", "sysv_msg"} {
		for _, mode := range []containerMode{containerModes[0], containerModes[2]} {
			t.Run(prog+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				machine.acquire(t, 1)
				j := newJob(t, e, fl)
				j.setupData(containerProgram{})
				bin := buildStatic(t, j, prog)
				log := "data/" + prog + ".log"
				s := j.launch(nil, containerArgv(fl, mode, j.path("data"), sif,
					bin, containerData+"/"+prog+".log", "120")...)
				j.waitLines(s, log, 20)
				j.checkpoint("--kill")
				s.finish(143, killTimeout)
				s = j.restart()
				j.waitLines(s, log, j.lines(log)+10)
				j.checkpoint("--kill")
				s.finish(143, killTimeout)
				s = j.restart()
				s.finish(0, containerFinishTimeout)
				data := j.readFile(log)
				if skip, err := checkSuiteLog(data); err != nil {
					t.Fatalf("%s log: %v\n%s", prog, err, logTail(data))
				} else if skip != "" {
					t.Fatalf("%s skipped: %s", prog, skip)
				}
			})
		}
	}
}

// buildStatic builds the suite program prog statically into the job's data
// directory (bound at /data) and returns its path inside the container.
func buildStatic(t *testing.T, j *job, prog string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: the suite programs cannot be built")
	}
	bin := j.path(filepath.Join("data", prog))
	if out, err := exec.Command(gcc, "-static", "-O1", "-pthread", "-o", bin,
		filepath.Join("testdata/suite", prog+".c")).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", prog, err, out)
	}
	j.chown(bin)
	return containerData + "/" + prog
}

// TestContainerNamedSocket: a unix listener bound where the container
// shares the host's path (the job's directory under /tmp, which Apptainer
// binds in by default) is re-bound there at restart; one bound in the
// container's private /tmp (--containall) is refused, and the job runs on.
func TestContainerNamedSocket(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := busyboxImage(t)
	fl := e.flavorNamed(t, "user-v2")
	t.Run("shared-tmp", func(t *testing.T) {
		t.Parallel()
		machine.acquire(t, 1)
		j := newJob(t, e, fl)
		j.setupData(containerProgram{})
		bin := buildStatic(t, j, "unix_named")
		log := "data/unix_named.log"
		s := j.launch(nil, containerArgv(fl, containerModes[0], j.path("data"), sif, bin, j.path(log), "120")...)
		j.waitLines(s, log, 20)
		j.checkpoint("--kill")
		s.finish(143, killTimeout)
		s = j.restart()
		s.finish(0, containerFinishTimeout)
		data := j.readFile(log)
		if skip, err := checkSuiteLog(data); err != nil || skip != "" {
			t.Fatalf("unix_named log: %v %s\n%s", err, skip, logTail(data))
		}
	})
	t.Run("container-tmp", func(t *testing.T) {
		t.Parallel()
		machine.acquire(t, 1)
		j := newJob(t, e, fl)
		j.setupData(containerProgram{})
		bin := buildStatic(t, j, "unix_named")
		s := j.launch(nil, containerArgv(fl, containerModes[2], j.path("data"), sif, bin, "/tmp/unix_named.log", "400")...)
		deadline := time.Now().Add(progressTimeout)
		for {
			code, out, errOut := j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
			if code == 0 {
				t.Fatalf("checkpoint of a socket bound in the container's /tmp succeeded:\n%s%s", out, errOut)
			}
			if strings.Contains(out+errOut, "inside the container") {
				break
			}
			// Before the program has bound its socket, the refusal
			// is another (or none at all).
			if time.Now().After(deadline) {
				t.Fatalf("checkpoint never named the socket path:\n%s%s", out, errOut)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if s.exited() {
			t.Fatalf("supervisor ended (%s) after a refused checkpoint:\n%s", s.status(), s.output())
		}
		s.kill()
	})
}
