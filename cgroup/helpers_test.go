package cgroup

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// requireRoot skips tests that create cgroups in the host hierarchies.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create scratch cgroups")
	}
}

// scratchParent makes a parent cgroup ckpt-unit-<rand> at the top of the
// hierarchy for v (for v1 the freezer one, plus the same directory in the
// memory, pids and cpu hierarchies) and removes it after the test.
func scratchParent(t *testing.T, v Version) string {
	t.Helper()
	requireRoot(t)
	ms, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("ckpt-unit-%08x", rand.Uint32())
	var dirs []string
	for _, m := range ms {
		if (v == V2 && m.fstype == "cgroup2") || (v == V1 && m.hasController("freezer")) {
			dirs = append(dirs, filepath.Join(m.point, name))
			break
		}
	}
	if len(dirs) == 0 {
		t.Skipf("no %s freezer hierarchy is mounted", v)
	}
	if v == V1 {
		for _, m := range ms {
			if !m.hasController("freezer") && (m.hasController("memory") || m.hasController("pids") || m.hasController("cpu")) {
				dirs = append(dirs, filepath.Join(m.point, name))
			}
		}
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("make scratch parent: %v", err)
		}
	}
	t.Cleanup(func() {
		for _, d := range dirs {
			if c, err := Load(d); err == nil && c.version == V1 {
				_ = c.Thaw()
			}
			if err := removeTree(d); err != nil {
				t.Errorf("clean up %s: %v", d, err)
			}
		}
	})
	return dirs[0]
}

// jobCgroup creates the cgroup "job" of version v under a scratch parent,
// removed when the test ends, and returns it with the parent.
func jobCgroup(t *testing.T, v Version) (*Cgroup, string) {
	t.Helper()
	parent := scratchParent(t, v)
	c, err := Create(Options{Parent: parent, Name: "job"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove() })
	return c, parent
}

// startProc starts a sleeping (busy == false) or spinning process that
// the test cleans up.
func startProc(t *testing.T, busy bool) *exec.Cmd {
	t.Helper()
	if busy {
		return startCommand(t, "sh", "-c", "while :; do :; done")
	}
	return startCommand(t, "sleep", "1000")
}

// startCommand starts argv as a process that the test cleans up.
func startCommand(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// procStat returns the state letter and utime (clock ticks) of pid.
func procStat(t *testing.T, pid int) (byte, uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f[0][0], utime
}

// cpuAdvances reports whether pid accumulates user time within d.
func cpuAdvances(t *testing.T, pid int, d time.Duration) bool {
	t.Helper()
	_, before := procStat(t, pid)
	// CPU time counts in clock ticks; on a loaded machine a spinning
	// task may take a while to collect one.
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
		if _, after := procStat(t, pid); after > before {
			return true
		}
	}
	return false
}

func itoa(i int) string { return strconv.Itoa(i) }
