package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// FD is one entry of /proc/pid/fd with its fdinfo.
type FD struct {
	Num    int
	Target string // readlink of /proc/pid/fd/N
	Pos    int64
	Flags  int // octal "flags:" of fdinfo, O_CLOEXEC included
	MntID  int
	// Info holds the remaining fdinfo lines ("eventfd-count", "tfd" ...).
	Info []string
}

// ReadFDs lists the open file descriptors of pid, with their fdinfo.
func ReadFDs(pid int) ([]FD, error) {
	links, err := ReadFDLinks(pid)
	if err != nil {
		return nil, err
	}
	out := links[:0]
	for _, fd := range links {
		if err := readFdinfo(pid, &fd); errors.Is(err, fs.ErrNotExist) {
			continue // closed since the listing (only a running process does that)
		} else if err != nil {
			return nil, err
		}
		out = append(out, fd)
	}
	return out, nil
}

// ReadFDLinks lists the open file descriptors of pid with their targets
// only (Num and Target), for callers that need no fdinfo.
func ReadFDLinks(pid int) ([]FD, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list fds of %d: %w", pid, err)
	}
	var out []FD
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(dir + "/" + e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // closed since the listing (only a running process does that)
		}
		if err != nil {
			return nil, fmt.Errorf("pid %d fd %d: %w", pid, n, err)
		}
		out = append(out, FD{Num: n, Target: target})
	}
	return out, nil
}

func readFdinfo(pid int, fd *FD) error {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd.Num))
	if err != nil {
		return fmt.Errorf("pid %d fd %d: fdinfo: %w", pid, fd.Num, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "pos":
			fd.Pos, _ = strconv.ParseInt(v, 10, 64)
		case "flags":
			f, _ := strconv.ParseInt(v, 8, 64)
			fd.Flags = int(f)
		case "mnt_id":
			fd.MntID, _ = strconv.Atoi(v)
		default:
			fd.Info = append(fd.Info, line)
		}
	}
	return nil
}

// InfoValue returns the value of fdinfo key (e.g. "eventfd-count").
func (fd *FD) InfoValue(key string) (string, bool) {
	for _, l := range fd.Info {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}
