package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// benchRun is one finished short command: its wall time, its output and
// what wait4 reported about it.
type benchRun struct {
	wall   time.Duration
	code   int
	maxRSS int64 // bytes, wait4's ru_maxrss
	out    string
}

// benchCommand runs argv to completion (or until timeout) and measures it.
func benchCommand(timeout time.Duration, argv ...string) (benchRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := benchRun{wall: time.Since(start), out: out.String()}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s did not finish in %v:\n%s", strings.Join(argv, " "), timeout, r.out)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return r, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	r.code = cmd.ProcessState.ExitCode()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss * 1024 // kilobytes on Linux
	}
	return r, nil
}

// benchProc is a long-running process the benchmark started: a supervisor
// or a job.
type benchProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// benchStart starts argv in the background with its output in outPath. A
// new session keeps it off the terminal (CRIU's --shell-job wants a session
// leader). With orphanKill, Pdeathsig takes it down if the benchmark dies; a
// job for CRIU must not have it, as CRIU restores it and then leaves the
// restored job, which the signal would kill.
func benchStart(outPath string, orphanKill bool, argv ...string) (*benchProc, error) {
	out, err := os.Create(outPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if orphanKill {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &benchProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *benchProc) pid() int { return p.cmd.Process.Pid }

func (p *benchProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to end (and be reaped) and
// returns its exit code, or -1 and false if it is still running.
func (p *benchProc) wait(timeout time.Duration) (int, bool) {
	select {
	case <-p.done:
		return benchExitCode(p.cmd.ProcessState), true
	case <-time.After(timeout):
		return -1, false
	}
}

// kill sends SIGKILL and waits for the process to be reaped.
func (p *benchProc) kill() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(20 * time.Second)
}

// benchExitCode is the exit code, or 128+signal for a killed process, as a
// shell reports it.
func benchExitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// benchVmHWM returns the peak resident set size of pid in bytes, from
// /proc/pid/status.
func benchVmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM of %d: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	// A process that is exiting has no memory left to report.
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// benchHWMWatcher samples a process's VmHWM until stopped, because a
// supervisor told to kill its job may exit right after the checkpoint, and
// VmHWM only grows, so the last sample is the peak up to then.
type benchHWMWatcher struct {
	stop chan struct{}
	res  chan int64
}

func benchWatchHWM(pid int) *benchHWMWatcher {
	w := &benchHWMWatcher{stop: make(chan struct{}), res: make(chan int64, 1)}
	go func() {
		var peak int64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, err := benchVmHWM(pid); err == nil && v > peak {
				peak = v
			}
			select {
			case <-w.stop:
				w.res <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// done takes a last sample and returns the peak seen, 0 if none.
func (w *benchHWMWatcher) done() int64 {
	close(w.stop)
	return <-w.res
}

// benchDiskUsage is what du reports for dir: allocated blocks of every
// file below it, hard links counted once.
func benchDiskUsage(dir string) (int64, error) {
	seen := map[uint64]bool{}
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return total, nil
}

// benchProcsUnder lists the pids of processes whose command line mentions
// dir: everything the benchmark started for one measurement names its
// private directory.
func benchProcsUnder(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// benchKillUnder gives the processes that mention dir up to grace to end
// by themselves, then kills those left and waits until they are gone; it
// returns those it had to kill.
func benchKillUnder(dir string, grace time.Duration) []int {
	deadline := time.Now().Add(grace)
	left := benchProcsUnder(dir)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		left = benchProcsUnder(dir)
	}
	for _, pid := range left {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(benchProcsUnder(dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return left
}

// benchDropCaches writes back dirty pages and empties the page cache, so a
// restore reads its image from disk.
func benchDropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop page cache: %w", err)
	}
	return nil
}

// benchWarmMemory touches and frees twice the job's size of anonymous
// memory, in a child process so the measured tools' own peak memory (which
// a child inherits from its parent's high-water mark) stays untouched. On
// virtual machines that hand free memory back to the host, the first touch
// of memory the guest has not used lately is several times slower than
// later ones; without this, whichever tool restores first pays for it and
// the comparison measures the order of the runs.
func benchWarmMemory(mib int) {
	script := fmt.Sprintf("b = b'\\x01' * (%d << 20)", 2*mib)
	exec.Command("python3", "-c", script).Run()
}

// benchLoad is the first three fields of /proc/loadavg.
func benchLoad() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
