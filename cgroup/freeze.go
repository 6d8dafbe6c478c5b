package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// ErrFreezeTimeout is wrapped by Freeze when the kernel did not report the
// cgroup frozen within the timeout.
var ErrFreezeTimeout = errors.New("cgroup did not freeze in time")

// thawTimeout bounds how long Thaw waits for the kernel to report the
// cgroup thawed; thawing does not wait for tasks, so this is generous.
const thawTimeout = 5 * time.Second

// v1FreezeRetry is how long a v1 freeze waits before it asks again.
const v1FreezeRetry = 20 * time.Millisecond

// Freeze freezes every task of the cgroup and waits until the kernel
// reports the whole cgroup frozen (v2: "frozen 1" in cgroup.events; v1:
// freezer.state reads FROZEN). If that does not happen within timeout (a
// timeout of 0 checks once, without waiting) or anything fails, it thaws
// the cgroup again and returns an error naming the tasks that did not
// freeze. Freeze never waits longer than timeout plus the thaw.
func (c *Cgroup) Freeze(timeout time.Duration) error {
	if !c.CanFreeze() {
		return fmt.Errorf("freeze %s: %s", c.path, c.freezerMissing())
	}
	start := time.Now()
	if err := c.requestFreeze(); err != nil {
		return c.abortFreeze(fmt.Errorf("freeze %s: %w", c.path, err))
	}
	var frozen bool
	var err error
	if c.version == V2 {
		frozen, err = c.waitFrozen(true, timeout)
	} else {
		// v1 freezes each task once per request: a task that was
		// running then and went to sleep in the kernel before it
		// reached the refrigerator (a vfork parent starting to wait for
		// its child) is never frozen, and its child, frozen, never
		// lets it go. Asking again freezes it where it sleeps.
		deadline := start.Add(timeout)
		frozen, err = c.waitFrozen(true, min(v1FreezeRetry, timeout))
		for err == nil && !frozen && time.Now().Before(deadline) {
			if err = c.requestFreeze(); err == nil {
				frozen, err = c.waitFrozen(true, min(v1FreezeRetry, time.Until(deadline)))
			}
		}
	}
	if err != nil {
		return c.abortFreeze(fmt.Errorf("freeze %s: %w", c.path, err))
	}
	if !frozen {
		// Collected before the thaw, while the stragglers are still
		// the ones holding the freeze up.
		report := c.unfrozenReport()
		return c.abortFreeze(fmt.Errorf("freeze %s: %w after %v; %s", c.path, ErrFreezeTimeout, timeout, report))
	}
	logrus.Debugf("froze %s in %v", c.path, time.Since(start))
	return nil
}

// abortFreeze thaws the cgroup after a failed freeze and returns err,
// extended when the thaw failed too.
func (c *Cgroup) abortFreeze(err error) error {
	if terr := c.Thaw(); terr != nil {
		return fmt.Errorf("%w; thaw after the failed freeze also failed: %w", err, terr)
	}
	return fmt.Errorf("%w (cgroup thawed again)", err)
}

// CanFreeze reports whether the job can be frozen through this cgroup. A
// cgroup v2 directory on a kernel without cgroup.freeze (before 5.2) still
// holds the job and its limits; its checkpoints stop the job with ptrace
// alone.
func (c *Cgroup) CanFreeze() bool {
	switch c.version {
	case V2:
		return kernel.Has(kernel.CgroupV2Freezer)
	case V1:
		return kernel.Has(kernel.CgroupV1Freezer)
	}
	return false
}

// freezerMissing says why CanFreeze is false.
func (c *Cgroup) freezerMissing() string {
	f := kernel.CgroupV2Freezer
	if c.version == V1 {
		f = kernel.CgroupV1Freezer
	}
	return fmt.Sprintf("%s: %s", kernel.Describe(f).What, kernel.Current().Why(f))
}

// requestFreeze asks the kernel to freeze the cgroup.
func (c *Cgroup) requestFreeze() error {
	// Only the request is written here; waitFrozen waits, with a bound,
	// for the kernel to finish it.
	if c.version == V2 {
		return writeExisting(filepath.Join(c.path, "cgroup.freeze"), "1")
	}
	return writeExisting(filepath.Join(c.path, "freezer.state"), "FROZEN")
}

// Thaw thaws the cgroup and waits until the kernel reports it thawed. It
// fails when an ancestor cgroup is frozen, because the job stays frozen
// then whatever its own state says.
func (c *Cgroup) Thaw() error {
	if !c.CanFreeze() {
		return nil // nothing here was frozen
	}
	if c.version == V2 {
		if a := c.frozenAncestorV2(); a != "" {
			return fmt.Errorf("thaw %s: ancestor cgroup %s is frozen", c.path, a)
		}
		if err := writeExisting(filepath.Join(c.path, "cgroup.freeze"), "0"); err != nil {
			return fmt.Errorf("thaw %s: %w", c.path, err)
		}
	} else {
		// The library loops until freezer.state reads THAWED, which
		// never happens below a frozen ancestor; check that first so
		// the call below returns at once.
		pf, err := readTrimmed(filepath.Join(c.path, "freezer.parent_freezing"))
		if err != nil {
			return fmt.Errorf("thaw %s: %w", c.path, err)
		}
		if pf == "1" {
			return fmt.Errorf("thaw %s: an ancestor freezer cgroup is frozen", c.path)
		}
		if err := writeExisting(filepath.Join(c.path, "freezer.state"), "THAWED"); err != nil {
			return fmt.Errorf("thaw %s: %w", c.path, err)
		}
	}
	thawed, err := c.waitFrozen(false, thawTimeout)
	if err != nil {
		return fmt.Errorf("thaw %s: %w", c.path, err)
	}
	if !thawed {
		return fmt.Errorf("thaw %s: still frozen after %v (is an ancestor cgroup frozen?)", c.path, thawTimeout)
	}
	return nil
}

// frozenAncestorV2 returns the nearest ancestor below the mount point
// whose cgroup.freeze is set, or "". A v2 cgroup stays frozen while an
// ancestor is, whatever its own cgroup.freeze says.
func (c *Cgroup) frozenAncestorV2() string {
	for d := filepath.Dir(c.path); within(c.mountPoint, d) && d != c.mountPoint; d = filepath.Dir(d) {
		if v, err := readTrimmed(filepath.Join(d, "cgroup.freeze")); err == nil && v == "1" {
			return d
		}
	}
	return ""
}

// waitFrozen polls the kernel's freezer state until it equals want or
// timeout passes, and reports whether it got there. It checks at least
// once.
func (c *Cgroup) waitFrozen(want bool, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	pause := 50 * time.Microsecond
	for {
		frozen, err := c.frozen()
		if err != nil {
			return false, err
		}
		if frozen == want {
			return true, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// frozen reads whether the kernel reports the cgroup completely frozen.
func (c *Cgroup) frozen() (bool, error) {
	if c.version == V2 {
		b, err := os.ReadFile(filepath.Join(c.path, "cgroup.events"))
		if err != nil {
			return false, err
		}
		s := bufio.NewScanner(bytes.NewReader(b))
		for s.Scan() {
			if v, ok := strings.CutPrefix(s.Text(), "frozen "); ok {
				return v == "1", nil
			}
		}
		return false, fmt.Errorf("%s/cgroup.events has no frozen key (kernel without the v2 freezer?)", c.path)
	}
	st, err := readTrimmed(filepath.Join(c.path, "freezer.state"))
	if err != nil {
		return false, err
	}
	return st == "FROZEN", nil
}

// task is what /proc tells about one thread while a freeze is pending.
type task struct {
	pid, tid int
	comm     string
	state    byte
	wchan    string
}

func (t task) String() string {
	s := fmt.Sprintf("pid %d tid %d (%s) state %c wchan %s", t.pid, t.tid, t.comm, t.state, t.wchan)
	if t.state == 'D' && (t.wchan == "kernel_clone" || t.wchan == "wait_for_vfork_done") {
		s += " (waiting for its vfork child to exec or exit)"
	}
	return s
}

// frozenIn reports whether t shows the signs of a frozen task. The kernel
// keeps no per-task freezer flag user space can read, so this goes by the
// scheduler state and the wait channel: a v2 frozen task sleeps in the
// freezer trap of the signal code, a v1 frozen one in the refrigerator
// (reported as 'D'), and stopped or traced tasks count as frozen on both.
func (t task) frozenIn(v Version) bool {
	switch {
	case t.state == 'T' || t.state == 't':
		return true
	case v == V2:
		return t.wchan == "do_freezer_trap" || t.wchan == "get_signal"
	default:
		return t.state == 'D' || t.wchan == "__refrigerator"
	}
}

// unfrozenReport describes the tasks that hold a freeze up. When none
// looks unfrozen it lists the tasks in uninterruptible sleep, which are
// the usual culprits on v1.
func (c *Cgroup) unfrozenReport() string {
	pids, err := c.Procs()
	if err != nil {
		return fmt.Sprintf("tasks unknown: %v", err)
	}
	var all, not, blocked []string
	for _, pid := range pids {
		for _, t := range threadsOf(pid) {
			all = append(all, t.String())
			if !t.frozenIn(c.version) {
				not = append(not, t.String())
			} else if t.state == 'D' {
				blocked = append(blocked, t.String())
			}
		}
	}
	switch {
	case len(not) > 0:
		return "tasks not frozen: " + strings.Join(not, ", ")
	case len(blocked) > 0:
		return "tasks in uninterruptible sleep: " + strings.Join(blocked, ", ")
	case len(all) > 0:
		// The stragglers got there between the last check and now.
		return "every task looks frozen by now: " + strings.Join(all, ", ")
	default:
		return "the cgroup has no tasks left"
	}
}

// threadsOf reads the threads of pid from /proc; a process that exits
// meanwhile yields none.
func threadsOf(pid int) []task {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var ts []task
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue
		}
		comm, state, ok := parseStat(string(stat))
		if !ok {
			continue
		}
		wchan, _ := readTrimmed(filepath.Join(dir, e.Name(), "wchan"))
		ts = append(ts, task{pid: pid, tid: tid, comm: comm, state: state, wchan: wchan})
	}
	return ts
}

// parseStat returns the command name and state letter of a
// /proc/pid/stat line. The name may hold spaces and parentheses, so the
// state is found after the last ')'.
func parseStat(s string) (comm string, state byte, ok bool) {
	open := strings.IndexByte(s, '(')
	end := strings.LastIndexByte(s, ')')
	if open < 0 || end < open || end+2 >= len(s) {
		return "", 0, false
	}
	return s[open+1 : end], s[end+2], true
}

// readTrimmed reads a small cgroup or proc file without its trailing
// newline.
func readTrimmed(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
