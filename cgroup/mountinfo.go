package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
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
	infos, err := mountinfo.GetMountsFromReader(r, mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, err
	}
	ms := make([]mount, 0, len(infos))
	for _, in := range infos {
		m := mount{root: in.Root, point: in.Mountpoint, fstype: in.FSType}
		if in.FSType == "cgroup" {
			for _, o := range strings.Split(in.VFSOptions, ",") {
				if notController[o] || strings.Contains(o, "=") || o == "" {
					continue
				}
				m.controllers = append(m.controllers, o)
			}
		}
		ms = append(ms, m)
	}
	return ms, nil
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
