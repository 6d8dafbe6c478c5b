package integration

import (
	"bufio"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestManyPipesNearQuota checkpoints a job of the unprivileged user that
// holds 1100 pipes with data queued in each (testdata/suite/pipes_many.c),
// more than fs.pipe-user-pages-soft gives full size, so that every scratch
// and restored pipe is made over the user's quota. Then another process of
// the same user takes up the quota: a restore that cannot give the job's
// 60000-byte pipe room says why and changes nothing, and once that process
// is gone the job restores and ends with every pipe's data intact.
//
// Not a suite entry: the quota is the user's, and other suite jobs of the
// same user running at the same time would be pushed over it too.
func TestManyPipesNearQuota(t *testing.T) {
	e := setup(t)
	bins := buildSuite(t)
	fl := e.pickFlavor(t, "user-v2", "user-none")
	machine.acquire(t, 1)
	r := &suiteRun{t: t, entry: suiteEntry{name: "pipes_many", prog: "pipes_many.c"}, ticks: suiteTicks, bins: bins}
	r.j = newJob(t, e, fl)
	r.s = r.j.launch(nil, r.entry.argv(r.bins, r.j.path(suiteLog), r.ticks, "")...)
	r.waitProgress("launch")
	r.checkpoint("checkpoint #1")
	r.waitProgress("after checkpoint #1")
	r.s.kill()

	r.s = r.j.restart()
	r.waitProgress("restart #1")

	// The user's other pipes: made while the job holds its own, they
	// are small, and the checkpoint has even less room.
	stopSmall := pipeHog(t, r.j, 1100)
	r.checkpoint("checkpoint #2 --kill, the quota taken", "--kill")
	if code := r.s.waitExit(ckptTimeout); code != 143 {
		r.fatalf("checkpoint #2 --kill", "supervisor exited with %d, want 143\n%s", code, outputTail(r.s))
	}
	r.j.waitJobGone(nil)
	gen := r.j.latest()
	// Made now, they take the whole quota at full size.
	stopHog := pipeHog(t, r.j, 1100)

	r.s = r.j.restart()
	if code := r.s.waitExit(ckptTimeout); code == 0 {
		r.fatalf("restart, the quota taken", "exited 0 although no pipe could hold the 60000 bytes:\n%s", outputTail(r.s))
	}
	r.j.waitJobGone(nil)
	if !r.s.outputContains("fs.pipe-user-pages-soft") || !r.s.outputContains("60000") {
		r.errorf("restart, the quota taken", "the error does not name the quota and the pipe's 60000 bytes:\n%s", outputTail(r.s))
	}
	for _, l := range r.j.list() {
		if l.Generation == gen && l.RestoreFailed != "" {
			r.errorf("restart, the quota taken", "generation %d was marked failed for the user's other pipes: %s", gen, l.RestoreFailed)
		}
	}
	stopHog()
	stopSmall()

	r.s = r.j.restart()
	r.waitProgress("restart #3")
	r.finish()
}

// pipeHog starts a process of the job's user that holds n empty pipes,
// and returns what stops it.
func pipeHog(t *testing.T, j *job, n int) (stop func()) {
	t.Helper()
	script := `import os, resource, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = [os.pipe() for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
time.sleep(3600)
`
	ctx, cancel := context.WithCancel(context.Background())
	// Not named after the job's directory: it is not the job's.
	cmd := exec.CommandContext(ctx, pythonPath, "-c", script, strconv.Itoa(n))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if j.fl.user {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(j.env.uid), Gid: uint32(j.env.gid)}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			cancel()
			t.Fatalf("pipe hog: %q", line)
		}
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("pipe hog not ready after 30s")
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}
