package proc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Stat holds the /proc/pid/stat fields the engine uses.
type Stat struct {
	PID, PPID, PGID, SID int
	Comm                 string
	State                byte
	StartCode, EndCode   uint64
	StartStack           uint64
	StartData, EndData   uint64
	StartBrk             uint64
	ArgStart, ArgEnd     uint64
	EnvStart, EnvEnd     uint64
	// ExitCode is the wait status a zombie leaves for its parent.
	ExitCode int
}

// ReadStat parses /proc/<pid>/stat. The mm fields read as zero without
// ptrace access.
func ReadStat(pid int) (*Stat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return parseStat(data)
}

func parseStat(data []byte) (*Stat, error) {
	s := string(data)
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return nil, fmt.Errorf("stat: malformed %q", s)
	}
	st := &Stat{Comm: s[open+1 : close]}
	var err error
	if st.PID, err = strconv.Atoi(strings.TrimSpace(s[:open])); err != nil {
		return nil, fmt.Errorf("stat: pid: %w", err)
	}
	// Fields after the comm start at field 3 (state).
	f := strings.Fields(s[close+1:])
	field := func(n int) uint64 {
		if n-3 >= len(f) {
			return 0
		}
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	if len(f) < 49 {
		return nil, fmt.Errorf("stat: %d fields, want at least 51", len(f)+2)
	}
	st.State = f[0][0]
	st.PPID, st.PGID, st.SID = int(field(4)), int(field(5)), int(field(6))
	st.StartCode, st.EndCode, st.StartStack = field(26), field(27), field(28)
	st.StartData, st.EndData, st.StartBrk = field(45), field(46), field(47)
	st.ArgStart, st.ArgEnd = field(48), field(49)
	st.EnvStart, st.EnvEnd = field(50), field(51)
	st.ExitCode = int(field(52))
	return st, nil
}

// Status is /proc/pid/status as key/value pairs.
type Status map[string]string

// ReadStatus parses /proc/<path>/status, path being "pid" or "pid/task/tid".
func ReadStatus(path string) (Status, error) {
	data, err := os.ReadFile("/proc/" + path + "/status")
	if err != nil {
		return nil, fmt.Errorf("read status of %s: %w", path, err)
	}
	return parseStatus(data), nil
}

// ReadStatusAt parses <path>/status below procDir, an open descriptor of a
// /proc: one of another PID namespace than the /proc mounted now.
func ReadStatusAt(procDir int, path string) (Status, error) {
	fd, err := unix.Openat(procDir, path+"/status", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("read status of %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path+"/status")
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read status of %s: %w", path, err)
	}
	return parseStatus(data), nil
}

func parseStatus(data []byte) Status {
	st := Status{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	return st
}

// Hex parses a hexadecimal field such as CapEff or SigBlk.
func (s Status) Hex(key string) (uint64, error) {
	v, ok := s[key]
	if !ok {
		return 0, fmt.Errorf("status: no %s field", key)
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("status: %s: %w", key, err)
	}
	return n, nil
}

// Ints parses a whitespace separated decimal field such as Uid or NSpid.
func (s Status) Ints(key string) ([]int, error) {
	v, ok := s[key]
	if !ok {
		return nil, fmt.Errorf("status: no %s field", key)
	}
	var out []int
	for _, f := range strings.Fields(v) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("status: %s: %w", key, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// Bytes parses a size field such as VmRSS ("1234 kB"); 0 when it is
// missing or not a size.
func (s Status) Bytes(key string) int64 {
	v, ok := strings.CutSuffix(s[key], " kB")
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0
	}
	return n << 10
}

// NSPid is the innermost pid of a task (last NSpid entry).
func (s Status) NSPid() (int, error) {
	ids, err := s.Ints("NSpid")
	if err != nil || len(ids) == 0 {
		return 0, fmt.Errorf("status: NSpid: %v", err)
	}
	return ids[len(ids)-1], nil
}

// ReadAuxv returns /proc/pid/auxv as 64-bit words, AT_NULL pair included.
func ReadAuxv(pid int) ([]uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return nil, fmt.Errorf("read auxv of %d: %w", pid, err)
	}
	out := make([]uint64, len(data)/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(data[8*i:])
	}
	return out, nil
}

// Tasks lists the thread ids of pid.
func Tasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("list threads of %d: %w", pid, err)
	}
	var out []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out, nil
}

// Children lists the child processes of every thread of pid.
func Children(pid int) ([]int, error) {
	tids, err := Tasks(pid)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, tid := range tids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("read children of %d: %w", pid, err)
		}
		for _, f := range strings.Fields(string(data)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out, nil
}
