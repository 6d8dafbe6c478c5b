package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procInfo is one process as /proc shows it. pid and start together name a
// process for good: a pid alone may be reused.
type procInfo struct {
	pid   int
	ppid  int
	comm  string
	state byte
	start uint64 // start time in clock ticks after boot
}

func (p procInfo) String() string {
	return fmt.Sprintf("%d(%s,%c)", p.pid, p.comm, p.state)
}

// readProc reads /proc/pid/stat; ok is false when the process is gone.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	// comm may hold spaces and parentheses: it ends at the last ')'.
	open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || close < open {
		return procInfo{}, false
	}
	f := strings.Fields(string(b[close+1:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	p := procInfo{pid: pid, comm: string(b[open+1 : close]), state: f[0][0]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, true
}

// allProcs lists every process on the host.
func allProcs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var ps []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// descendants lists the processes below pid (not pid itself).
func descendants(pid int) []procInfo {
	children := map[int][]procInfo{}
	for _, p := range allProcs() {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []procInfo
	queue := []int{pid}
	for len(queue) > 0 {
		for _, c := range children[queue[0]] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
		queue = queue[1:]
	}
	return out
}

// procsMentioning lists the live processes whose command line contains s.
// Every job and supervisor of a test has its private directory on its command
// line, so this finds them even after they were reparented.
func procsMentioning(s string) []procInfo {
	var out []procInfo
	self := os.Getpid()
	for _, p := range allProcs() {
		if p.pid == self || p.state == 'Z' {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.pid))
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, p)
		}
	}
	return out
}

// alive filters ps down to the processes still running: same pid and start
// time, and not a zombie.
func alive(ps []procInfo) []procInfo {
	var out []procInfo
	for _, p := range ps {
		if q, ok := readProc(p.pid); ok && q.start == p.start && q.state != 'Z' {
			out = append(out, q)
		}
	}
	return out
}

// notRunnable says why the process pid is held still (stopped, traced or in
// a frozen cgroup), or returns "" when it is free to run.
func notRunnable(pid int) string {
	p, ok := readProc(pid)
	if !ok {
		return fmt.Sprintf("process %d is gone", pid)
	}
	if p.state == 'T' || p.state == 't' {
		return fmt.Sprintf("process %s is stopped", p)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fmt.Sprintf("process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok && strings.TrimSpace(v) != "0" {
			return fmt.Sprintf("process %s is still traced by %s", p, strings.TrimSpace(v))
		}
	}
	if why := frozen(pid); why != "" {
		return fmt.Sprintf("process %s: %s", p, why)
	}
	return ""
}

// frozen reports whether a cgroup of pid (v2, or the v1 freezer) is frozen.
func frozen(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			if dir := cgroupDir("cgroup2", "", f[2]); dir != "" {
				if v, _ := os.ReadFile(filepath.Join(dir, "cgroup.freeze")); strings.TrimSpace(string(v)) == "1" {
					return "cgroup " + dir + " is frozen"
				}
			}
		case hasWord(f[1], "freezer", ","):
			if dir := cgroupDir("cgroup", "freezer", f[2]); dir != "" {
				v, _ := os.ReadFile(filepath.Join(dir, "freezer.state"))
				if s := strings.TrimSpace(string(v)); s != "" && s != "THAWED" {
					return "freezer " + dir + " is " + s
				}
			}
		}
	}
	return ""
}

// cgroupDir finds the directory of cgroup path on the mount of type fstype
// (with controller among its options for v1), from /proc/self/mountinfo.
func cgroupDir(fstype, controller, path string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || qf[0] != fstype {
			continue
		}
		if controller != "" && !hasWord(qf[2], controller, ",") {
			continue
		}
		root, mnt := unescapeMount(pf[3]), unescapeMount(pf[4])
		rel, ok := strings.CutPrefix(path, root)
		if !ok {
			continue
		}
		return filepath.Join(mnt, rel)
	}
	return ""
}

func hasWord(list, word, sep string) bool {
	for _, w := range strings.Split(list, sep) {
		if w == word {
			return true
		}
	}
	return false
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
