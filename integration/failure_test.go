package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// counterJob launches counter.c counting to counterSteps in j.
func counterJob(j *job, opts ...string) *supervisor {
	return j.launch(opts, j.env.progs.counter, j.path("job.log"), strconv.Itoa(counterSteps))
}

// TestCorruptPageFileFallsBack flips one byte in a page data file of the
// newest generation: restart must name that file and restore the generation
// before it, and the job must still end right.
func TestCorruptPageFileFallsBack(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-none", "root-none")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	s := counterJob(j)
	j.waitLines(s, log, 20)
	c1 := j.checkpoint()
	atFirst := j.lines(log)
	// Far enough apart that the two generations' logs tell them apart.
	j.waitLines(s, log, atFirst+100)
	c2 := j.checkpoint()
	atSecond := j.lines(log)
	j.waitLines(s, log, atSecond+20)
	s.kill()

	bad := largestPageFile(t, j.genDir(c2.Generation))
	flipByte(t, bad)

	// Restoring the first generation cuts the log back to below atFirst; the
	// second one would leave at least atSecond lines.
	var fewest atomic.Int64
	fewest.Store(int64(j.lines(log)))
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if n := int64(j.lines(log)); n < fewest.Load() {
				fewest.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	s = j.restart()
	j.waitLines(s, log, atSecond+40)
	close(stop)
	<-watched
	if !s.outputContains(filepath.Base(bad)) {
		t.Errorf("restart did not name the corrupt file %s:\n%s", filepath.Base(bad), s.output())
	}
	if n := fewest.Load(); n > int64(atFirst)+10 {
		t.Errorf("the log never went back below %d lines (generation %d had at most %d): "+
			"generation %d was not the one restored:\n%s", n, c1.Generation, atFirst, c1.Generation, s.output())
	}
	s.finish(0, 60*time.Second)
	if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
		t.Fatalf("job log after restoring the older generation: %v", err)
	}
}

// largestPageFile returns the biggest pages-<pid>.img of a generation.
func largestPageFile(t *testing.T, gen string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(gen, "pages-*.img"))
	var best string
	var size int64 = -1
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Size() > size {
			best, size = f, fi.Size()
		}
	}
	if size <= 0 {
		t.Fatalf("no non-empty pages-<pid>.img in %s (found %v)", gen, files)
	}
	return best
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	off := fi.Size() / 2
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestKillDuringCheckpoint kills the supervisor the moment it starts writing a
// checkpoint of the 1 GiB job: the half-written generation must not count,
// and the previous one must restore a job that ends right.
func TestKillDuringCheckpoint(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "root-v2", "user-v2", "user-v1")
	machine.acquire(t, 2)
	j := newJob(t, e, fl)
	const log = "job.log"
	argv := []string{e.progs.mem, j.path(log), strconv.Itoa(memMiB), strconv.Itoa(memSteps)}
	s := j.launch(nil, argv...)
	j.waitLines(s, log, 3)
	c1 := j.checkpoint()
	j.waitLines(s, log, j.lines(log)+3)

	s.signal(syscall.SIGUSR1)
	deadline := time.Now().Add(ckptTimeout)
	for !hasTempGeneration(j.ckptDir) {
		if j.latest() > c1.Generation {
			t.Fatalf("generation %d completed before any .tmp-gen-* directory was seen", j.latest())
		}
		if s.exited() || time.Now().After(deadline) {
			t.Fatalf("no .tmp-gen-* directory after SIGUSR1 (%s):\n%s", s.status(), s.output())
		}
		time.Sleep(time.Millisecond)
	}
	s.kill()
	if got := j.latest(); got != c1.Generation {
		t.Fatalf("latest points to generation %d after a killed checkpoint, want %d", got, c1.Generation)
	}
	j.checkList()

	s = j.restart()
	s.finish(0, 120*time.Second)
	if err := checkSequence(j.readFile(log), 1, memSteps, parseMemLine); err != nil {
		t.Fatalf("job log after restoring from before the killed checkpoint: %v", err)
	}
}

func hasTempGeneration(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-gen-") {
			return true
		}
	}
	return false
}

// unsupportedError is what a refused checkpoint of the TCP job must name: the
// pid, the fd and the kind of object.
var unsupportedError = regexp.MustCompile(`(?is)pid \d+.*fd \d+.*(tcp|socket)`)

// tcpListener is a job holding a TCP socket, which a checkpoint refuses: a
// connection to or from outside the job cannot be taken along.
const tcpListener = `import socket, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
time.sleep(1000)`

// TestUnsupportedJobKeepsRunning launches a job with a TCP socket, which the
// engine does not handle: checkpoint must fail saying what it could not
// handle, write no generation, and leave the job running.
func TestUnsupportedJobKeepsRunning(t *testing.T) {
	e := setup(t)
	for _, fl := range e.allFlavors() {
		t.Run(fl.name, func(t *testing.T) {
			if why := fl.usable(); why != "" {
				t.Skip(why)
			}
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			// The job's directory as $0 marks the shell as part of the job.
			s := j.launch(nil, "sh", "-c", "yes | python3 -c '"+tcpListener+"'", j.dir)
			yes, sleep := waitForComm(t, s, "yes"), waitForComm(t, s, "python3")
			waitForFD(t, s, sleep.pid, "socket:")

			for attempt := 1; attempt <= 2; attempt++ {
				code, out, errOut := j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
				if code == 0 {
					t.Fatalf("checkpoint of a job with a TCP socket succeeded:\n%s%s", out, errOut)
				}
				if !unsupportedError.MatchString(out + errOut) {
					t.Errorf("checkpoint error does not name the pid, fd and socket:\n%s%s", out, errOut)
				}
				if s.exited() {
					t.Fatalf("supervisor ended (%s) after a refused checkpoint:\n%s", s.status(), s.output())
				}
				for _, p := range []procInfo{yes, sleep} {
					if len(alive([]procInfo{p})) == 0 {
						t.Fatalf("%s died after a refused checkpoint:\n%s", p, s.output())
					}
					if why := notRunnable(p.pid); why != "" {
						t.Fatalf("after a refused checkpoint %s:\n%s", why, s.output())
					}
				}
			}
			if gens := j.generations(); len(gens) != 0 || hasTempGeneration(j.ckptDir) {
				t.Errorf("refused checkpoints left generations %v or a temporary one behind", gens)
			}
			s.kill()
		})
	}
}

// waitForFD waits until process pid has a descriptor whose link starts
// with prefix.
func waitForFD(t *testing.T, s *supervisor, pid int, prefix string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) && !s.exited() {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range ents {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, prefix) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pid %d never had a %s descriptor (%s):\n%s", pid, prefix, s.status(), s.output())
}

// waitForComm waits for a process named comm below the supervisor.
func waitForComm(t *testing.T, s *supervisor, comm string) procInfo {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) && !s.exited() {
		if pid := s.pid(); pid > 0 {
			for _, p := range descendants(pid) {
				if p.comm == comm {
					return p
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s process below the supervisor (%s):\n%s", comm, s.status(), s.output())
	return procInfo{}
}

// TestTimerTermAndKill covers the other ways a checkpoint is taken: the
// --interval timer (with --keep pruning old generations), SIGTERM (as Slurm
// sends before preemption) and checkpoint --kill. Each ends the job with
// status 143 after a checkpoint it restarts from.
func TestTimerTermAndKill(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "root-v2", "user-none", "root-none")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	const log = "job.log"
	s := counterJob(j, "--interval", "1", "--keep", "2")
	j.waitGeneration(s, 3)
	// The timer keeps writing: look a few times for a settled directory
	// instead of failing on a snapshot taken mid-rename or mid-prune.
	var gens []int
	for try := 0; ; try++ {
		gens = j.generations()
		if len(gens) > 0 && len(gens) <= 2 && gens[len(gens)-1] == j.latest() {
			break
		}
		if try == 20 {
			t.Fatalf("with --keep 2 the directory holds generations %v, latest %d", gens, j.latest())
		}
		time.Sleep(100 * time.Millisecond)
	}

	before := j.latest()
	// Manifest times may have whole seconds only.
	sentAt := time.Now().Truncate(time.Second)
	s.signal(syscall.SIGTERM)
	s.finish(143, ckptTimeout)
	if j.latest() <= before {
		t.Fatalf("SIGTERM wrote no new generation (latest %d, was %d):\n%s", j.latest(), before, s.output())
	}
	j.checkList()
	for _, g := range j.list() {
		if g.Generation != j.latest() {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, g.Time); err != nil || at.Before(sentAt) {
			t.Errorf("the newest generation %d was taken at %q, before SIGTERM (%v)", g.Generation, g.Time, sentAt)
		}
	}

	s = j.restart()
	j.waitLines(s, log, j.lines(log)+20)
	killedAt := j.checkpoint("--kill").Generation
	s.finish(143, killTimeout)

	s = j.restart()
	s.finish(0, 60*time.Second)
	if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
		t.Fatalf("job log after SIGTERM and checkpoint --kill (last generation %d): %v", killedAt, err)
	}
}

// TestCgroupParentOutsideCaller: a user's supervisor started outside the
// delegated cgroup it names with --cgroup-parent cannot move its job there;
// it says why and what to do, and starts nothing.
func TestCgroupParentOutsideCaller(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "user-v1")
	j := newJob(t, e, fl)
	marker := j.path("ran")
	code, out, errOut := j.cli("launch", "--ckpt-dir", j.ckptDir, "--cgroup-parent", fl.parent, "--", "/bin/touch", marker)
	if code == 0 {
		t.Fatalf("launch succeeded:\n%s%s", out, errOut)
	}
	for _, want := range []string{"permission denied", "closest common ancestor", "echo $$ > " + fl.parent + "/cgroup.procs", "Delegate=yes", "leave out --cgroup-parent"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the error does not say %q:\n%s", want, errOut)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the job ran")
	}
}
