package main

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCgroupLimits(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	tests := []struct {
		name string
		res  *specs.LinuxResources
		want string
	}{
		{name: "none recorded", res: nil, want: ""},
		{name: "no controllers", res: &specs.LinuxResources{}, want: ""},
		{name: "v2 unlimited", res: &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: i64(-1), Swap: i64(-1)},
			CPU:    &specs.LinuxCPU{Quota: i64(-1), Period: u64(100000)},
			Pids:   &specs.LinuxPids{Limit: i64(-1)},
		}, want: "memory: limit unlimited, memory+swap unlimited; cpu: quota unlimited; pids: limit unlimited"},
		{name: "v2 high and weight", res: &specs.LinuxResources{
			Memory:  &specs.LinuxMemory{Limit: i64(2 << 30), Reservation: i64(1 << 30)},
			Unified: map[string]string{"memory.high": "1610612736", "cpu.weight": "50", "io.max": "8:0 rbps=1"},
		}, want: "memory: limit 2.00 GiB, reservation 1.00 GiB, high 1.50 GiB; cpu: weight 50; : io.max 8:0 rbps=1"},
		{name: "v1 shares", res: &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Shares: u64(1024), Quota: i64(50000), Period: u64(100000), Cpus: "0-3"},
		}, want: "cpu: quota 50000us per 100000us (0.50 CPUs), shares 1024, cpus 0-3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, l := range cgroupLimits(tt.res) {
				got = append(got, l[0]+": "+l[1])
			}
			if s := strings.Join(got, "; "); s != tt.want {
				t.Errorf("got %q, want %q", s, tt.want)
			}
		})
	}
}

func TestGenerationKind(t *testing.T) {
	tests := []struct {
		parent int
		needs  []int
		want   string
	}{
		{0, nil, "full"},
		{3, nil, "incremental on 3, all pages changed"},
		{3, []int{1}, "incremental on 3, reads 1"},
		{4, []int{1, 2, 4}, "incremental on 4, reads 1,2,4"},
	}
	for _, tt := range tests {
		if got := generationKind(tt.parent, tt.needs); got != tt.want {
			t.Errorf("generationKind(%d, %v) = %q, want %q", tt.parent, tt.needs, got, tt.want)
		}
	}
}
