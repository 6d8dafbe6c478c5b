package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleMountinfo = `22 1 0:21 / /proc rw,nosuid - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 /job\040dir /mnt/my\040cg rw,relatime shared:5 master:1 - cgroup2 cgroup2 rw,nsdelegate
`

func TestParseMounts(t *testing.T) {
	ms, err := parseMounts(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		dir, point, fstype string
		ctl                []string
	}{
		{"/sys/fs/cgroup/cpu,cpuacct/a/b", "/sys/fs/cgroup/cpu,cpuacct", "cgroup", []string{"cpu", "cpuacct"}},
		{"/sys/fs/cgroup/freezer", "/sys/fs/cgroup/freezer", "cgroup", []string{"freezer"}},
		{"/sys/fs/cgroup/systemd/x", "/sys/fs/cgroup/systemd", "cgroup", nil},
		{"/mnt/my cg/job", "/mnt/my cg", "cgroup2", nil},
	}
	for _, tt := range tests {
		m, ok := mountOf(ms, tt.dir)
		if !ok || m.point != tt.point || m.fstype != tt.fstype || strings.Join(m.controllers, ",") != strings.Join(tt.ctl, ",") {
			t.Errorf("mountOf(%q) = %+v, %v", tt.dir, m, ok)
		}
	}
	if _, ok := mountOf(ms, "/sys/fs/cgroupx"); ok {
		t.Error("mountOf matched a sibling path by prefix")
	}
	if _, err := parseMounts(strings.NewReader("garbage\n")); err == nil {
		t.Error("parseMounts accepted a line without a separator")
	}
}

func TestOwnCgroupDir(t *testing.T) {
	ms, err := parseMounts(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		procSelf string
		want     string
		ok       bool
	}{
		{"4:freezer:/\n0::/job dir/step\n", "/mnt/my cg/step", true},
		{"0::/job dir\n", "/mnt/my cg", true},
		{"0::/elsewhere\n", "", false},
		{"4:freezer:/\n", "", false},
	}
	for _, tt := range tests {
		got, err := ownCgroupDir(ms, strings.NewReader(tt.procSelf))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ownCgroupDir(%q) = %q, %v; want %q", tt.procSelf, got, err, tt.want)
		}
	}
	if _, err := ownCgroupDir(ms[:3], strings.NewReader("0::/\n")); err == nil {
		t.Error("ownCgroupDir without a cgroup2 mount succeeded")
	}
}

func TestDetect(t *testing.T) {
	ms, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	type detectCase struct {
		name string
		path func(t *testing.T) string
		want Version
		ok   bool
	}
	tests := []detectCase{
		{"tmp", func(t *testing.T) string { return t.TempDir() }, None, false},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, None, false},
	}
	for _, m := range ms {
		switch {
		case m.fstype == "cgroup2":
			tests = append(tests, detectCase{"v2 root", func(t *testing.T) string { return m.point }, V2, true},
				detectCase{"v2 child", func(t *testing.T) string { return scratchParent(t, V2) }, V2, true})
		case m.hasController("freezer"):
			tests = append(tests, detectCase{"v1 freezer root", func(t *testing.T) string { return m.point }, V1, true},
				detectCase{"v1 freezer child", func(t *testing.T) string { return scratchParent(t, V1) }, V1, true})
		case m.fstype == "cgroup" && m.hasController("pids"):
			tests = append(tests, detectCase{"v1 pids", func(t *testing.T) string { return m.point }, None, false})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(tt.path(t))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("Detect = %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	parent := scratchParent(t, V2)
	tests := []struct {
		name    string
		opts    Options
		noWrite bool
	}{
		{"empty name", Options{Parent: parent}, false},
		{"name with slash", Options{Parent: parent, Name: "a/b"}, false},
		{"parent not a cgroup", Options{Parent: os.TempDir(), Name: "job"}, false},
		{"existing", Options{Parent: filepath.Dir(parent), Name: filepath.Base(parent)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Create(tt.opts)
			if err == nil {
				_ = c.Remove()
				t.Fatalf("Create(%+v) succeeded", tt.opts)
			}
			if errors.Is(err, ErrNoWritableCgroup) != tt.noWrite {
				t.Errorf("Create(%+v) = %v; ErrNoWritableCgroup expected %v", tt.opts, err, tt.noWrite)
			}
		})
	}
}
