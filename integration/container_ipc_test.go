package integration

import (
	"os/exec"
	"path/filepath"
	"testing"
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
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: the IPC programs cannot be built")
	}
	fl := e.flavorNamed(t, "user-v2")
	for _, prog := range []string{"sysv_shm", "sysv_sem", "sysv_msg"} {
		for _, mode := range []containerMode{containerModes[0], containerModes[2]} {
			t.Run(prog+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				machine.acquire(t, 1)
				j := newJob(t, e, fl)
				j.setupData(containerProgram{})
				bin := j.path(filepath.Join("data", prog))
				if out, err := exec.Command(gcc, "-static", "-O1", "-pthread", "-o", bin,
					filepath.Join("testdata/suite", prog+".c")).CombinedOutput(); err != nil {
					t.Fatalf("build %s: %v\n%s", prog, err, out)
				}
				j.chown(bin)
				log := "data/" + prog + ".log"
				s := j.launch(nil, containerArgv(fl, mode, j.path("data"), sif,
					containerData+"/"+prog, containerData+"/"+prog+".log", "120")...)
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
