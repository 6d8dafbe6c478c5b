package engine

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// vforkProgram forks a child that vforks a grandchild; the grandchild
// sleeps argv[1] milliseconds before _exit, so its parent waits in the
// kernel that long. The child prints "vforked" before the vfork and "done"
// once the grandchild is gone, then both processes pause.
const vforkProgram = `#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv)
{
	long ms = atol(argv[1]);
	setvbuf(stdout, NULL, _IONBF, 0);
	if (fork() == 0) {
		printf("vforked\n");
		pid_t c = vfork();
		if (c == 0) {
			struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
			nanosleep(&ts, NULL);
			_exit(0);
		}
		waitpid(c, NULL, 0);
		printf("done\n");
	}
	for (;;)
		pause();
}
`

// TestStopJobInVforkWindow stops a job while one of its processes waits
// for a vfork child that has not exec'd: the stop is tried again until
// the child is done, and when it takes too long the checkpoint fails with
// the job left running, no process of it left traced or stopped.
func TestStopJobInVforkWindow(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to trace and read the processes freely")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("needs a C compiler (cc)")
	}
	dir := t.TempDir()
	src, bin := filepath.Join(dir, "vfork.c"), filepath.Join(dir, "vfork")
	if err := os.WriteFile(src, []byte(vforkProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	const wantErr = "shares its memory with its parent"
	tests := []struct {
		name    string
		window  time.Duration
		retries time.Duration // vforkWait
		release time.Duration // releaseTimeout
		wantErr string
	}{
		{name: "window ends", window: 300 * time.Millisecond, retries: time.Second, release: time.Second},
		// The last try's release waits for the parent's stop.
		{name: "window outlasts the retries", window: 1500 * time.Millisecond, retries: time.Second, release: 2 * time.Second, wantErr: wantErr},
		// The parent is still waiting when the tracer gives up: the
		// tracer's thread exits, and the kernel lets the parent go.
		{name: "window outlasts the release", window: 3 * time.Second, retries: time.Second, release: 500 * time.Millisecond, wantErr: wantErr},
	}
	defer func(w, r time.Duration) { vforkWait, releaseTimeout = w, r }(vforkWait, releaseTimeout)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vforkWait, releaseTimeout = tc.retries, tc.release
			cmd := exec.Command(bin, strconv.FormatInt(tc.window.Milliseconds(), 10))
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				cmd.Process.Kill()
				cmd.Wait()
			})
			lines := make(chan string, 4)
			go func() {
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			expectLine(t, lines, "vforked", 5*time.Second)
			waitForGrandchild(t, cmd.Process.Pid)

			start := time.Now()
			var stopErr error
			var procs int
			err = ptrace.Run(func(tr *ptrace.Tracer) error {
				job, err := stopJob(tr, cmd.Process.Pid, nil, nil, logrus.New())
				if err != nil {
					stopErr = err
					return nil
				}
				procs = len(job.live())
				job.release()
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			switch {
			case tc.wantErr == "" && stopErr != nil:
				t.Fatalf("stop: %v", stopErr)
			case tc.wantErr == "" && took < tc.window/2:
				t.Errorf("stop took %v; the grandchild held its parent for %v", took, tc.window)
			case tc.wantErr != "" && (stopErr == nil || !strings.Contains(stopErr.Error(), tc.wantErr)):
				t.Fatalf("stop: error %v, want one containing %q", stopErr, tc.wantErr)
			}
			t.Logf("stop took %v (%d processes): %v", took, procs, stopErr)
			// The job runs on: the vfork ends, and nothing is left
			// traced.
			expectLine(t, lines, "done", tc.window+5*time.Second)
			for _, pid := range descendantsOrFatal(t, cmd.Process.Pid) {
				st, err := proc.ReadStatus(strconv.Itoa(pid))
				if err != nil {
					continue
				}
				if st["TracerPid"] != "0" || strings.HasPrefix(st["State"], "t") {
					t.Errorf("pid %d left %s, tracer %s", pid, st["State"], st["TracerPid"])
				}
			}
		})
	}
}

func expectLine(t *testing.T, lines <-chan string, want string, timeout time.Duration) {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok || l != want {
			t.Fatalf("program said %q (open %v), want %q", l, ok, want)
		}
	case <-time.After(timeout):
		t.Fatalf("program did not say %q in %v", want, timeout)
	}
}

// waitForGrandchild waits until the vfork child exists below top's child.
func waitForGrandchild(t *testing.T, top int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if pids, _ := descendants(top); len(pids) == 2 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the vfork child did not appear")
}

func descendantsOrFatal(t *testing.T, pid int) []int {
	t.Helper()
	pids, err := descendants(pid)
	if err != nil {
		t.Fatal(err)
	}
	return pids
}
