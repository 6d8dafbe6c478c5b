package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRotatedOutputFile rotates the job's log away after the checkpoint
// and puts a stranger's file in its place: the restart never cuts that
// file. With --strict it refuses and changes nothing; without, it says so,
// leaves the file's contents as they are, and the job appends after them.
func TestRotatedOutputFile(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "user-none", "root-v2")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	s := counterJob(j)
	j.waitLines(s, log, 20)
	j.checkpoint()
	atCheckpoint := j.readFile(log)
	j.waitLines(s, log, j.lines(log)+10)
	s.kill()

	rotated := j.readFile(log)
	if err := os.Rename(j.path(log), j.path(log+".1")); err != nil {
		t.Fatal(err)
	}
	stranger := bytes.Repeat([]byte("a line someone else wrote here\n"), 48000/31+1)[:48000]
	j.writeAsOwner(log, stranger)

	s = j.restart("--strict")
	if code := s.waitExit(ckptTimeout); code == 0 {
		t.Fatalf("restart --strict exited 0 over a replaced output file:\n%s", s.output())
	}
	j.waitJobGone(nil)
	if !s.outputContains("--strict") || !s.outputContains(j.path(log)) {
		t.Errorf("restart --strict does not name the replaced file and --strict:\n%s", s.output())
	}
	if got := j.readFile(log); !bytes.Equal(got, stranger) {
		t.Fatalf("restart --strict changed the replacing file (%d bytes, want the stranger's 48000)", len(got))
	}

	s = j.restart()
	waitRestored(t, s)
	if !s.outputContains("not the file the job had open") {
		t.Errorf("the restart does not say the file was replaced:\n%s", s.output())
	}
	want := len(stranger) + 40 // bytes: a few counter lines after the stranger's text
	deadline := time.Now().Add(progressTimeout)
	for len(j.readFile(log)) < want {
		if s.exited() || time.Now().After(deadline) {
			t.Fatalf("the restored job wrote nothing after the stranger's text (%s):\n%s", s.status(), s.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.kill()
	got := j.readFile(log)
	if !bytes.HasPrefix(got, stranger) {
		t.Fatalf("the stranger's 48000 bytes were changed: the file now starts %q", firstLine(got))
	}
	// What the job wrote after its checkpoint, and after the restart,
	// continues its own count.
	// The checkpoint saw from 20 lines to those read just after it.
	lines := strings.Split(strings.TrimSuffix(string(got[len(stranger):]), "\n"), "\n")
	first, err := parseCounterLine(lines[0])
	if last := bytes.Count(atCheckpoint, []byte{'\n'}) + 1; err != nil || first < 21 || first > last {
		t.Fatalf("the first line after the stranger's text is %q, want 21 to %d: the job did not go on from its checkpoint", lines[0], last)
	}
	for i, line := range lines {
		if n, err := parseCounterLine(line); err != nil || n != first+i {
			t.Fatalf("line %d after the stranger's text is %q, want %d", i+1, line, first+i)
		}
	}
	if b, _ := os.ReadFile(j.path(log + ".1")); !bytes.Equal(b, rotated) {
		t.Errorf("the rotated-away log changed (%d bytes, was %d)", len(b), len(rotated))
	}
}

// TestChangedExecutable changes the job's program after the checkpoint,
// keeping its size and mtime: the restart refuses it, naming the file,
// starts nothing, and does not mark the generation; with the program put
// back it restores.
func TestChangedExecutable(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "user-none", "root-v2")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	prog := j.path("counter")
	if err := copyFile(e.progs.counter, prog, 0o755); err != nil {
		t.Fatal(err)
	}
	s := j.launch(nil, prog, j.path(log), strconv.Itoa(counterSteps))
	j.waitLines(s, log, 20)
	gen := j.checkpoint().Generation
	s.kill()

	orig, err := os.ReadFile(prog)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(prog)
	changed := bytes.Clone(orig)
	changed[len(changed)/2] ^= 0xff
	writeKeepingMtime(t, prog, changed, fi.ModTime())

	s = j.restart()
	if code := s.waitExit(ckptTimeout); code == 0 {
		t.Fatalf("restart exited 0 with a changed executable:\n%s", s.output())
	}
	j.waitJobGone(nil)
	if !s.outputContains("executable") || !s.outputContains(prog) {
		t.Errorf("the refusal does not name the executable %s:\n%s", prog, s.output())
	}
	for _, l := range j.list() {
		if l.Generation == gen && l.RestoreFailed != "" {
			t.Errorf("generation %d was marked as failed for a change of this node's files: %s", gen, l.RestoreFailed)
		}
	}

	writeKeepingMtime(t, prog, orig, fi.ModTime())
	s = j.restart()
	waitRestored(t, s)
	s.finish(0, 60*time.Second)
	if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
		t.Fatalf("job log after the program was put back: %v", err)
	}
}

// TestChangedLibrary rebuilds a shared library the job has mapped after the
// checkpoint: the restart refuses it, naming the library.
func TestChangedLibrary(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "user-none", "root-v2")
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		skipOrFail(t, "gcc not found: %v", err)
	}
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	lib := j.path("libstep.so")
	buildLib := func(build string) {
		t.Helper()
		tmp := lib + ".new"
		out, err := exec.Command(gcc, "-O2", "-shared", "-fPIC", `-DSTEP_BUILD="`+build+`"`, "-o", tmp, "testdata/stepper/step.c").CombinedOutput()
		if err != nil {
			t.Fatalf("build libstep.so: %v\n%s", err, out)
		}
		// Replaced as a package update would: a new file under the name.
		if err := os.Rename(tmp, lib); err != nil {
			t.Fatal(err)
		}
	}
	buildLib("build 1")
	prog := j.path("stepper")
	out, err := exec.Command(gcc, "-O2", "-o", prog, "testdata/stepper/stepper.c", "-L"+j.dir, "-lstep", "-Wl,-rpath,"+j.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("build stepper: %v\n%s", err, out)
	}
	const log = "job.log"
	s := j.launch(nil, prog, j.path(log), "100000")
	j.waitLines(s, log, 10)
	j.checkpoint()
	s.kill()

	// The library the job mapped stays at hand under another name.
	if err := os.Link(lib, lib+".build1"); err != nil {
		t.Fatal(err)
	}
	buildLib("build 2")
	s = j.restart()
	if code := s.waitExit(ckptTimeout); code == 0 {
		t.Fatalf("restart exited 0 with a rebuilt library:\n%s", s.output())
	}
	j.waitJobGone(nil)
	if !s.outputContains("mapped file") || !s.outputContains(lib) {
		t.Errorf("the refusal does not name the mapped library %s:\n%s", lib, s.output())
	}

	// With its library back the job goes on from its checkpoint, still
	// running the code of build 1.
	if err := os.Rename(lib+".build1", lib); err != nil {
		t.Fatal(err)
	}
	s = j.restart()
	waitRestored(t, s)
	j.waitLines(s, log, j.lines(log)+10)
	s.kill()
	b := j.readFile(log)
	parse := func(line string) (int, error) {
		var n int
		if _, err := fmt.Sscanf(line, "step %d build 1", &n); err != nil || line != fmt.Sprintf("step %d build 1", n) {
			return 0, fmt.Errorf("not a step of build 1")
		}
		return n, nil
	}
	if err := checkSequence(b, 1, bytes.Count(b, []byte{'\n'}), parse); err != nil {
		t.Errorf("the job's log after the restart with its library back: %v", err)
	}
}

// writeAsOwner writes a file in the job's directory owned by the job's user.
func (j *job) writeAsOwner(name string, b []byte) {
	j.t.Helper()
	if err := os.WriteFile(j.path(name), b, 0o644); err != nil {
		j.t.Fatal(err)
	}
	if j.fl.user {
		if err := os.Chown(j.path(name), j.env.uid, j.env.gid); err != nil {
			j.t.Fatal(err)
		}
	}
}

// writeKeepingMtime rewrites path in place with b and puts its mtime back.
func writeKeepingMtime(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Now(), mtime); err != nil {
		t.Fatal(err)
	}
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}
