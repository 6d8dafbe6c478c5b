package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// supervisorComm is the command name of the supervisor process.
const supervisorComm = "ckpt-apptainer"

// supervisor is one running launch or restart.
type supervisor struct {
	j       *job
	name    string
	cmd     *exec.Cmd
	outPath string // its stdout and stderr, for failure messages
	done    chan struct{}
	pidOnce sync.Once
	sup     int // pid of the ckpt-apptainer process, below sh and runuser
}

// launch starts `ckpt-apptainer launch` of argv with the extra options opts.
func (j *job) launch(opts []string, argv ...string) *supervisor {
	j.t.Helper()
	args := append([]string{"--debug", "launch", "--ckpt-dir", j.ckptDir}, j.cgroupArgs()...)
	args = append(append(append(args, opts...), "--"), argv...)
	return j.start("launch", args)
}

// restart starts `ckpt-apptainer restart` with the extra options opts (a
// generation number included).
func (j *job) restart(opts ...string) *supervisor {
	j.t.Helper()
	args := append([]string{"--debug", "restart", "--ckpt-dir", j.ckptDir}, j.cgroupArgs()...)
	return j.start("restart", append(args, opts...))
}

func (j *job) start(kind string, args []string) *supervisor {
	j.t.Helper()
	j.nsup++
	s := &supervisor{
		j:       j,
		name:    fmt.Sprintf("%s #%d", kind, j.nsup),
		outPath: j.path(fmt.Sprintf("%s-%d.out", kind, j.nsup)),
		done:    make(chan struct{}),
	}
	out, err := os.Create(s.outPath)
	if err != nil {
		j.t.Fatal(err)
	}
	defer out.Close()
	s.cmd = j.command(context.Background(), true, args...)
	s.cmd.Dir = j.dir
	s.cmd.Stdout, s.cmd.Stderr = out, out
	// If the test binary dies, its supervisors (and so their jobs) die too.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		j.t.Fatalf("start %s: %v", s.name, err)
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	j.t.Cleanup(func() {
		if s.exited() {
			return
		}
		if pid := s.pid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		s.cmd.Process.Kill()
		select {
		case <-s.done:
		case <-time.After(killTimeout):
			j.t.Errorf("%s did not die after SIGKILL", s.name)
		}
	})
	j.t.Logf("started %s: %s", s.name, strings.Join(s.cmd.Args, " "))
	return s
}

// exited reports whether the supervisor (or sh/runuser above it) has ended.
func (s *supervisor) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status as a shell reports it: 128+N for signal N.
func (s *supervisor) exitCode() int {
	ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return s.cmd.ProcessState.ExitCode()
}

func (s *supervisor) status() string {
	if !s.exited() {
		return "running"
	}
	return fmt.Sprintf("exit status %d", s.exitCode())
}

// output returns the end of what the supervisor printed.
func (s *supervisor) output() string {
	b, _ := os.ReadFile(s.outPath)
	// The head holds a crash's first lines, the tail the latest messages.
	const head, tail = 2500, 4000
	if len(b) > head+tail {
		cut := fmt.Sprintf("\n[... %d bytes left out ...]\n", len(b)-head-tail)
		b = append(append(b[:head:head], cut...), b[len(b)-tail:]...)
	}
	return fmt.Sprintf("--- %s output ---\n%s--- end of %s output ---", s.name, b, s.name)
}

// outputContains reports whether the supervisor printed sub so far.
func (s *supervisor) outputContains(sub string) bool {
	b, _ := os.ReadFile(s.outPath)
	return bytes.Contains(b, []byte(sub))
}

// pid returns the pid of the ckpt-apptainer process itself, which in the user
// flavor runs below runuser; 0 if it ended before it could be found.
func (s *supervisor) pid() int {
	s.pidOnce.Do(func() {
		deadline := time.Now().Add(startTimeout)
		p := s.cmd.Process.Pid
		for time.Now().Before(deadline) && !s.exited() {
			if info, ok := readProc(p); ok && info.comm == supervisorComm {
				s.sup = p
				return
			}
			var kids []int
			for _, c := range allProcs() {
				if c.ppid == p {
					kids = append(kids, c.pid)
				}
			}
			if len(kids) == 1 {
				p = kids[0]
				continue
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return s.sup
}

// signal sends sig to the supervisor process.
func (s *supervisor) signal(sig syscall.Signal) {
	s.j.t.Helper()
	pid := s.pid()
	if pid == 0 {
		s.j.t.Fatalf("%s ended (%s) before it could be sent %v:\n%s", s.name, s.status(), sig, s.output())
	}
	if err := syscall.Kill(pid, sig); err != nil {
		s.j.t.Fatalf("signal %s: %v", s.name, err)
	}
}

// kill sends SIGKILL to the supervisor, as a batch system preempting the job
// would, and checks that every process of the job died with it.
func (s *supervisor) kill() {
	s.j.t.Helper()
	pid := s.pid()
	if pid == 0 {
		s.j.t.Fatalf("%s ended (%s) before it could be killed:\n%s", s.name, s.status(), s.output())
	}
	self, _ := readProc(pid)
	victims := append(append(descendants(pid), self), procsMentioning(s.j.dir)...)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		s.j.t.Fatalf("kill %s: %v", s.name, err)
	}
	s.waitExit(killTimeout)
	s.j.waitJobGone(victims)
}

// waitJobGone waits until none of victims and no process mentioning the
// job's directory is left.
func (j *job) waitJobGone(victims []procInfo) {
	j.t.Helper()
	deadline := time.Now().Add(jobGoneTimeout)
	for {
		left := unique(append(alive(victims), procsMentioning(j.dir)...))
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				syscall.Kill(p.pid, syscall.SIGKILL)
			}
			j.t.Fatalf("processes of the job still alive %v after its supervisor ended: %v", jobGoneTimeout, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unique drops repeated processes from ps.
func unique(ps []procInfo) []procInfo {
	seen := map[int]bool{}
	var out []procInfo
	for _, p := range ps {
		if !seen[p.pid] {
			seen[p.pid] = true
			out = append(out, p)
		}
	}
	return out
}

// waitExit waits for the supervisor to end and returns its exit code.
func (s *supervisor) waitExit(timeout time.Duration) int {
	s.j.t.Helper()
	select {
	case <-s.done:
		return s.exitCode()
	case <-time.After(timeout):
		s.j.t.Fatalf("%s still running after %v:\n%s", s.name, timeout, s.output())
		return 0
	}
}

// finish waits for the supervisor to exit with want, and for the job to be
// gone with it.
func (s *supervisor) finish(want int, timeout time.Duration) {
	s.j.t.Helper()
	var victims []procInfo
	if pid := s.pid(); pid > 0 {
		victims = descendants(pid)
	}
	if got := s.waitExit(timeout); got != want {
		s.j.t.Fatalf("%s exited with %d, want %d:\n%s", s.name, got, want, s.output())
	}
	s.j.waitJobGone(victims)
}

// machine shares the 2 cores between parallel tests: light jobs take one
// unit, jobs that use every core or much memory take both.
var machine = newSemaphore(2)

// semaphore is a counting semaphore that lets a waiting heavy acquirer go
// first, so light tests cannot starve it.
type semaphore struct {
	mu           sync.Mutex
	cond         *sync.Cond
	free         int
	heavyWaiting int
}

func newSemaphore(n int) *semaphore {
	s := &semaphore{free: n}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// acquire takes n units, releasing them at the end of the test.
func (s *semaphore) acquire(t *testing.T, n int) {
	s.mu.Lock()
	if n > 1 {
		s.heavyWaiting++
	}
	for s.free < n || (n == 1 && s.heavyWaiting > 0) {
		s.cond.Wait()
	}
	if n > 1 {
		s.heavyWaiting--
	}
	s.free -= n
	s.mu.Unlock()
	t.Cleanup(func() {
		s.mu.Lock()
		s.free += n
		s.cond.Broadcast()
		s.mu.Unlock()
	})
}
