package cgroup

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func i64(v int64) *int64       { return &v }
func u64(v uint64) *uint64     { return &v }
func toJSON(v any) string      { b, _ := json.Marshal(v); return string(b) }
func hasWord(s, w string) bool { return slices.Contains(strings.Fields(s), w) }

func TestResourcesApplyV1(t *testing.T) {
	parent := scratchParent(t, V1)
	src, err := Create(Options{Parent: parent, Name: "src"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Remove() })
	for _, ctl := range v1Companions {
		if _, ok := src.companions[ctl]; !ok {
			t.Skipf("no v1 %s hierarchy beside the freezer", ctl)
		}
	}
	want := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Reservation: i64(32 << 20), Swap: i64(96 << 20)},
		Pids:   &specs.LinuxPids{Limit: i64(50)},
		CPU:    &specs.LinuxCPU{Shares: u64(512), Quota: i64(50000), Period: u64(100000)},
	}
	if _, err := os.Stat(filepath.Join(src.companions["memory"], "memory.memsw.limit_in_bytes")); err != nil {
		want.Memory.Swap = nil // no swap accounting on this kernel
	}
	warns, err := src.Apply(want)
	if err != nil || len(warns) > 0 {
		t.Fatalf("Apply = %v, %v", warns, err)
	}
	got, err := src.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if toJSON(got) != toJSON(want) {
		t.Fatalf("Resources() = %s\nwant %s", toJSON(got), toJSON(want))
	}

	// The restore side: a fresh cgroup gets the recorded limits.
	dst, err := Create(Options{Parent: parent, Name: "dst"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Remove() })
	fresh, err := dst.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if *fresh.Pids.Limit != -1 || *fresh.Memory.Limit != -1 {
		t.Errorf("fresh cgroup limits %s, want unlimited", toJSON(fresh))
	}
	if warns, err := dst.Apply(got); err != nil || len(warns) > 0 {
		t.Fatalf("Apply(recorded) = %v, %v", warns, err)
	}
	again, err := dst.Resources()
	if err != nil || toJSON(again) != toJSON(want) {
		t.Fatalf("after restore Resources() = %s, %v; want %s", toJSON(again), err, toJSON(want))
	}

	// Lowering both limits must order the memsw write after the limit.
	lower := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(16 << 20), Swap: want.Memory.Swap}}
	if want.Memory.Swap != nil {
		lower.Memory.Swap = i64(24 << 20)
	}
	if warns, err := dst.Apply(lower); err != nil || len(warns) > 0 {
		t.Fatalf("Apply(lower) = %v, %v", warns, err)
	}

	// v2-only and unsupported settings are warnings, not errors.
	warns, err = dst.Apply(&specs.LinuxResources{
		Unified: map[string]string{"memory.high": "1G"},
		BlockIO: &specs.LinuxBlockIO{},
	})
	if err != nil || len(warns) != 2 {
		t.Errorf("Apply(v2-only) = %q, %v; want 2 warnings", warns, err)
	}
	// A value the kernel rejects is an error.
	if _, err := dst.Apply(&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(10)}}); err == nil {
		t.Error("Apply accepted a cfs quota of 10us")
	}
}

func TestResourcesApplyV2(t *testing.T) {
	parent := scratchParent(t, V2)
	c, err := Create(Options{Parent: parent, Name: "job"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Remove() })
	offered, err := readTrimmed(filepath.Join(parent, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	r := &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: i64(64 << 20), Reservation: i64(0), Swap: i64(96 << 20)},
		Pids:    &specs.LinuxPids{Limit: i64(50)},
		CPU:     &specs.LinuxCPU{Quota: i64(50000), Period: u64(100000)},
		Unified: map[string]string{"memory.high": "50331648", "cpu.weight": "50"},
	}
	warns, err := c.Apply(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Resources()
	if err != nil {
		t.Fatal(err)
	}
	for _, ctl := range []string{"memory", "pids", "cpu"} {
		warned := slices.ContainsFunc(warns, func(w string) bool { return strings.HasPrefix(w, ctl) })
		if !hasWord(offered, ctl) {
			// Not delegated to the scratch parent here: a warning, and
			// Resources leaves the controller out.
			if !warned {
				t.Errorf("no warning for unavailable %s controller (warnings %q)", ctl, warns)
			}
			continue
		}
		if warned {
			t.Errorf("warning for available %s controller: %q", ctl, warns)
		}
	}
	if hasWord(offered, "pids") && (got.Pids == nil || *got.Pids.Limit != 50) {
		t.Errorf("pids after Apply: %s", toJSON(got.Pids))
	}
	if !hasWord(offered, "pids") && got.Pids != nil {
		t.Errorf("Resources reports pids %s without the controller", toJSON(got.Pids))
	}
	if hasWord(offered, "memory") && (got.Memory == nil || toJSON(got.Memory) != toJSON(r.Memory) || got.Unified["memory.high"] != "50331648") {
		t.Errorf("memory after Apply: %s %v", toJSON(got.Memory), got.Unified)
	}
	if hasWord(offered, "cpu") && (got.CPU == nil || toJSON(got.CPU) != toJSON(r.CPU) || got.Unified["cpu.weight"] != "50") {
		t.Errorf("cpu after Apply: %s %v", toJSON(got.CPU), got.Unified)
	}
	t.Logf("controllers offered %q; warnings %q", offered, warns)
}

func TestParseMax(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"max", -1, true},
		{"0", 0, true},
		{"1073741824", 1 << 30, true},
		{"", 0, false},
		{"1G", 0, false},
	}
	for _, tt := range tests {
		got, err := parseMax(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("parseMax(%q) = %d, %v", tt.in, got, err)
		}
		if tt.ok && formatMax(got) != tt.in {
			t.Errorf("formatMax(%d) = %q, want %q", got, formatMax(got), tt.in)
		}
	}
}

func TestSharesToWeight(t *testing.T) {
	tests := []struct{ shares, weight uint64 }{
		{0, 1}, {2, 1}, {1024, 39}, {262144, 10000}, {1 << 30, 10000},
	}
	for _, tt := range tests {
		if got := sharesToWeight(tt.shares); got != tt.weight {
			t.Errorf("sharesToWeight(%d) = %d, want %d", tt.shares, got, tt.weight)
		}
	}
}

// TestApplyV2Files checks the v2 conversions against a directory of plain
// files shaped like a cgroup with memory, pids and cpu enabled, since the
// test machine's v2 hierarchy may have no controllers to delegate.
func TestApplyV2Files(t *testing.T) {
	files := map[string]string{
		"cgroup.controllers": "cpu memory pids",
		"memory.max":         "max", "memory.low": "0", "memory.high": "max", "memory.swap.max": "max",
		"pids.max": "max", "cpu.max": "max 100000", "cpu.weight": "100",
	}
	tests := []struct {
		name string
		in   *specs.LinuxResources
		set  map[string]string
		back *specs.LinuxResources
	}{
		{
			name: "limits",
			in: &specs.LinuxResources{
				Memory: &specs.LinuxMemory{Limit: i64(1 << 30), Reservation: i64(1 << 20), Swap: i64(3 << 29)},
				Pids:   &specs.LinuxPids{Limit: i64(100)},
				CPU:    &specs.LinuxCPU{Quota: i64(20000), Period: u64(50000), Shares: u64(1024)},
			},
			set: map[string]string{"memory.max": "1073741824", "memory.low": "1048576", "memory.swap.max": "536870912",
				"pids.max": "100", "cpu.max": "20000 50000", "cpu.weight": "39"},
			back: &specs.LinuxResources{
				Memory:  &specs.LinuxMemory{Limit: i64(1 << 30), Reservation: i64(1 << 20), Swap: i64(3 << 29)},
				Pids:    &specs.LinuxPids{Limit: i64(100)},
				CPU:     &specs.LinuxCPU{Quota: i64(20000), Period: u64(50000)},
				Unified: map[string]string{"cpu.weight": "39", "memory.high": "max"},
			},
		},
		{
			name: "unlimited and raw",
			in: &specs.LinuxResources{
				Memory:  &specs.LinuxMemory{Limit: i64(-1), Swap: i64(-1)},
				Pids:    &specs.LinuxPids{Limit: i64(-1)},
				CPU:     &specs.LinuxCPU{Quota: i64(-1), Shares: u64(2)},
				Unified: map[string]string{"cpu.weight": "77", "memory.high": "4096", "memory.swap.max": "8192"},
			},
			set: map[string]string{"memory.max": "max", "memory.swap.max": "8192", "pids.max": "max",
				"cpu.max": "max", "cpu.weight": "77", "memory.high": "4096"},
			back: &specs.LinuxResources{
				Memory:  &specs.LinuxMemory{Limit: i64(-1), Reservation: i64(0)},
				Pids:    &specs.LinuxPids{Limit: i64(-1)},
				Unified: map[string]string{"cpu.weight": "77", "memory.high": "4096", "memory.swap.max": "8192"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for f, v := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c := &Cgroup{version: V2, path: dir}
			warns, err := c.Apply(tt.in)
			if err != nil || len(warns) > 0 {
				t.Fatalf("Apply = %q, %v", warns, err)
			}
			for f, want := range tt.set {
				if got, _ := readTrimmed(filepath.Join(dir, f)); got != want {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
			if tt.name == "unlimited and raw" {
				// "max" alone is not a valid cpu.max read-back; the kernel
				// would show "max 100000".
				_ = os.WriteFile(filepath.Join(dir, "cpu.max"), []byte("max 100000\n"), 0o644)
				tt.back.CPU = &specs.LinuxCPU{Quota: i64(-1), Period: u64(100000)}
			}
			got, err := c.Resources()
			if err != nil || toJSON(got) != toJSON(tt.back) {
				t.Errorf("Resources() = %s, %v\nwant %s", toJSON(got), err, toJSON(tt.back))
			}
		})
	}
	t.Run("swap below limit", func(t *testing.T) {
		dir := t.TempDir()
		for f, v := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c := &Cgroup{version: V2, path: dir}
		if _, err := c.Apply(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(100), Swap: i64(50)}}); err == nil {
			t.Error("Apply accepted a memory+swap limit below the memory limit")
		}
	})
}
