package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// mount is one cgroup filesystem mount from /proc/self/mountinfo.
type mount struct {
	// root is the directory of the hierarchy that appears at point; it is
	// not "/" inside a cgroup namespace or for a bind mount.
	root  string
	point string
	// fstype is "cgroup" or "cgroup2".
	fstype string
	// controllers lists the v1 controllers bound to the hierarchy (the
	// super options that name one); empty for cgroup2.
	controllers []string
}

// hasController reports whether m is a v1 hierarchy with controller bound.
func (m mount) hasController(controller string) bool {
	for _, c := range m.controllers {
		if c == controller {
			return true
		}
	}
	return false
}

// notController lists the v1 super options that name no controller.
var notController = map[string]bool{
	"rw": true, "ro": true, "xattr": true, "noprefix": true,
	"clone_children": true, "cpuset_v2_mode": true, "none": true, "all": true,
}

// readMounts returns the cgroup mounts of the calling process.
func readMounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	ms, err := parseMounts(f)
	if err != nil {
		return nil, fmt.Errorf("parse /proc/self/mountinfo: %w", err)
	}
	return ms, nil
}

// parseMounts extracts the cgroup and cgroup2 mounts from mountinfo text.
func parseMounts(r io.Reader) ([]mount, error) {
	var ms []mount
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		line := s.Text()
		// The optional fields end at a lone "-"; the fields after it are
		// fstype, source and super options.
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		pf := strings.Fields(pre)
		qf := strings.Fields(post)
		if len(pf) < 5 || len(qf) < 1 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		fstype := qf[0]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		m := mount{root: unescape(pf[3]), point: unescape(pf[4]), fstype: fstype}
		if fstype == "cgroup" && len(qf) >= 3 {
			for _, o := range strings.Split(qf[2], ",") {
				if notController[o] || strings.Contains(o, "=") || o == "" {
					continue
				}
				m.controllers = append(m.controllers, o)
			}
		}
		ms = append(ms, m)
	}
	return ms, s.Err()
}

// unescape undoes the octal escapes (\040 for a space and the like) the
// kernel uses for paths in mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountOf returns the mount among ms whose mount point holds dir (the
// longest match), or false when dir is on no cgroup mount.
func mountOf(ms []mount, dir string) (mount, bool) {
	var best mount
	found := false
	for _, m := range ms {
		if !within(m.point, dir) {
			continue
		}
		if !found || len(m.point) > len(best.point) {
			best, found = m, true
		}
	}
	return best, found
}

// within reports whether path is base or lies below it.
func within(base, path string) bool {
	rel, err := filepath.Rel(base, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// ownCgroupDir returns the directory of the calling process's cgroup v2
// cgroup, as seen through the cgroup2 mount in ms.
func ownCgroupDir(ms []mount, procSelfCgroup io.Reader) (string, error) {
	var v2 *mount
	for i := range ms {
		if ms[i].fstype == "cgroup2" {
			v2 = &ms[i]
			break
		}
	}
	if v2 == nil {
		return "", fmt.Errorf("no cgroup2 hierarchy is mounted")
	}
	s := bufio.NewScanner(procSelfCgroup)
	for s.Scan() {
		// The v2 entry is "0::/path"; v1 entries name their controllers.
		rest, ok := strings.CutPrefix(s.Text(), "0::")
		if !ok {
			continue
		}
		if !within(v2.root, rest) {
			return "", fmt.Errorf("own cgroup %s is outside the cgroup2 mount at %s (root %s)", rest, v2.point, v2.root)
		}
		rel, _ := filepath.Rel(v2.root, rest)
		return filepath.Join(v2.point, rel), nil
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	return "", fmt.Errorf("own cgroup has no cgroup v2 entry")
}
