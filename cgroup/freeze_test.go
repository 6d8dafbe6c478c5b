package cgroup

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var versions = []Version{V1, V2}

func TestFreezeThawRemove(t *testing.T) {
	for _, v := range versions {
		t.Run(string(v), func(t *testing.T) {
			parent := scratchParent(t, v)
			c, err := Create(Options{Parent: parent, Name: "job"})
			if err != nil {
				t.Fatal(err)
			}
			if c.Version() != v || c.Path() != filepath.Join(parent, "job") {
				t.Fatalf("got %s %s, want %s %s/job", c.Version(), c.Path(), v, parent)
			}
			busy := startProc(t, true)
			sleeper := startProc(t, false)
			want := []int{busy.Process.Pid, sleeper.Process.Pid}
			for _, pid := range want {
				if err := c.AddProc(pid); err != nil {
					t.Fatal(err)
				}
			}
			// A nested cgroup's tasks belong to the job too.
			nested := startProc(t, false)
			sub := filepath.Join(c.Path(), "nested")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(sub, "cgroup.procs"), []byte(itoa(nested.Process.Pid)), 0); err != nil {
				t.Fatal(err)
			}
			want = append(want, nested.Process.Pid)
			slices.Sort(want)
			got, err := c.Procs()
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("Procs() = %v, %v; want %v", got, err, want)
			}

			if err := c.Freeze(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if frozen, err := c.frozen(); err != nil || !frozen {
				t.Fatalf("kernel state after Freeze: frozen=%v err=%v", frozen, err)
			}
			for _, pid := range want {
				// A frozen task may show R for a moment after the kernel
				// counts it frozen: it loops in the kernel's freezer
				// trap, never reaching user space. Wait for it to settle.
				var last task
				settled := false
				for deadline := time.Now().Add(time.Second); !settled && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					for _, th := range threadsOf(pid) {
						last = th
						settled = th.frozenIn(v) && th.state != 'R' && (v == V2 || th.state == 'D')
					}
				}
				if !settled {
					t.Errorf("%v does not look frozen", last)
				}
			}
			if cpuAdvances(t, busy.Process.Pid, 300*time.Millisecond) {
				t.Error("busy loop kept running while frozen")
			}

			if err := c.Thaw(); err != nil {
				t.Fatal(err)
			}
			if frozen, err := c.frozen(); err != nil || frozen {
				t.Fatalf("kernel state after Thaw: frozen=%v err=%v", frozen, err)
			}
			if !cpuAdvances(t, busy.Process.Pid, 3*time.Second) {
				t.Error("busy loop did not run again after Thaw")
			}

			// Remove must kill frozen leftovers too.
			if err := c.Freeze(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if err := c.Remove(); err != nil {
				t.Fatal(err)
			}
			for _, cmd := range []*exec.Cmd{busy, sleeper, nested} {
				err := cmd.Wait()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Errorf("job process ended with %v, want SIGKILL", err)
				}
			}
			for _, d := range c.dirs() {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still exists after Remove: %v", d, err)
				}
			}
			if err := c.Remove(); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
}

func TestFreezeTimeoutThaws(t *testing.T) {
	for _, v := range versions {
		t.Run(string(v), func(t *testing.T) {
			c, _ := jobCgroup(t, v)
			// More spinning tasks than CPUs, so some are never on a CPU
			// when the freeze is requested and cannot be frozen at once.
			var busy []int
			for range 4 * runtime.NumCPU() {
				cmd := startProc(t, true)
				if err := c.AddProc(cmd.Process.Pid); err != nil {
					t.Fatal(err)
				}
				busy = append(busy, cmd.Process.Pid)
			}
			var ferr error
			// Whether one check finds a straggler is a race with the
			// scheduler, which a single try occasionally loses.
			for range 200 {
				if ferr = c.Freeze(0); ferr != nil {
					break
				}
				if err := c.Thaw(); err != nil {
					t.Fatal(err)
				}
			}
			if ferr == nil {
				t.Fatal("Freeze(0) of spinning tasks succeeded 200 times; no timeout observed")
			}
			if !errors.Is(ferr, ErrFreezeTimeout) || !strings.Contains(ferr.Error(), "thawed again") {
				t.Fatalf("Freeze(0) = %v; want ErrFreezeTimeout and a thaw", ferr)
			}
			if !strings.Contains(ferr.Error(), "pid ") {
				t.Errorf("error names no task: %v", ferr)
			}
			t.Logf("Freeze(0): %v", ferr)
			if frozen, err := c.frozen(); err != nil || frozen {
				t.Fatalf("cgroup left frozen=%v (err %v) after a failed freeze", frozen, err)
			}
			for _, pid := range busy {
				if !cpuAdvances(t, pid, 3*time.Second) {
					t.Errorf("pid %d does not run after the failed freeze", pid)
				}
			}
		})
	}
}

// TestFreezeVforkingShell freezes a shell that vforks and execs commands
// without pause, over and over: a freeze that lands while the shell starts
// to wait for its vfork child must still complete.
func TestFreezeVforkingShell(t *testing.T) {
	for _, v := range versions {
		t.Run(string(v), func(t *testing.T) {
			c, _ := jobCgroup(t, v)
			sh := startCommand(t, "/bin/sh", "-c", "while :; do /bin/true; done")
			if err := c.AddProc(sh.Process.Pid); err != nil {
				t.Fatal(err)
			}
			const freezes = 300
			var slowest time.Duration
			for i := range freezes {
				start := time.Now()
				if err := c.Freeze(5 * time.Second); err != nil {
					t.Fatalf("freeze %d of %d: %v", i+1, freezes, err)
				}
				slowest = max(slowest, time.Since(start))
				if err := c.Thaw(); err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d freezes, slowest %v", freezes, slowest)
		})
	}
}

func TestThawUnderFrozenAncestor(t *testing.T) {
	for _, v := range versions {
		t.Run(string(v), func(t *testing.T) {
			c, parent := jobCgroup(t, v)
			p, err := Load(parent)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Freeze(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Thaw() })
			done := make(chan error, 1)
			go func() { done <- c.Thaw() }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Thaw under a frozen ancestor reported success")
				}
				t.Logf("Thaw: %v", err)
			case <-time.After(thawTimeout + 5*time.Second):
				t.Fatal("Thaw under a frozen ancestor hangs")
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in    string
		comm  string
		state byte
		ok    bool
	}{
		{"42 (sleep) S 1 42 42 0 -1", "sleep", 'S', true},
		{"43 (a) b (c)) R 1 2", "a) b (c)", 'R', true},
		{"44 (x", "", 0, false},
		{"45 (x)", "", 0, false},
	}
	for _, tt := range tests {
		comm, state, ok := parseStat(tt.in)
		if comm != tt.comm || state != tt.state || ok != tt.ok {
			t.Errorf("parseStat(%q) = %q %q %v, want %q %q %v", tt.in, comm, state, ok, tt.comm, tt.state, tt.ok)
		}
	}
}

func TestTaskString(t *testing.T) {
	tests := []struct {
		t    task
		want string
	}{
		{task{pid: 7, tid: 8, comm: "sh", state: 'S', wchan: "do_wait"}, "pid 7 tid 8 (sh) state S wchan do_wait"},
		{task{pid: 7, tid: 7, comm: "sh", state: 'D', wchan: "kernel_clone"}, "pid 7 tid 7 (sh) state D wchan kernel_clone (waiting for its vfork child to exec or exit)"},
		{task{pid: 7, tid: 7, comm: "sh", state: 'D', wchan: "wait_for_vfork_done"}, "pid 7 tid 7 (sh) state D wchan wait_for_vfork_done (waiting for its vfork child to exec or exit)"},
	}
	for _, tt := range tests {
		if got := tt.t.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestTaskFrozenIn(t *testing.T) {
	tests := []struct {
		t    task
		v    Version
		want bool
	}{
		{task{state: 'R'}, V2, false},
		{task{state: 'S', wchan: "hrtimer_nanosleep"}, V2, false},
		{task{state: 'S', wchan: "get_signal"}, V2, true},
		{task{state: 'S', wchan: "do_freezer_trap"}, V2, true},
		{task{state: 't', wchan: "ptrace_stop"}, V2, true},
		{task{state: 'R'}, V1, false},
		{task{state: 'S', wchan: "pipe_read"}, V1, false},
		{task{state: 'D', wchan: "__refrigerator"}, V1, true},
		{task{state: 'T'}, V1, true},
	}
	for _, tt := range tests {
		if got := tt.t.frozenIn(tt.v); got != tt.want {
			t.Errorf("%v frozenIn(%s) = %v, want %v", tt.t, tt.v, got, tt.want)
		}
	}
}
