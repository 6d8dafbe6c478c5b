package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Apply sets recorded limits on the cgroup, typically a new one made at
// restore to match the checkpointed job. A limit that cannot be set here
// (controller not enabled or not delegated, a v2-only value on v1, a kind
// of limit this package does not restore) becomes a warning; an error is
// returned only for real failures such as a value the kernel rejects.
func (c *Cgroup) Apply(r *specs.LinuxResources) ([]string, error) {
	if r == nil {
		return nil, nil
	}
	a := &applier{c: c, disabled: map[string]bool{}}
	a.warnUnsupported(r)
	var err error
	if c.version == V2 {
		err = a.applyV2(r)
	} else {
		err = a.applyV1(r)
	}
	if err != nil {
		return a.warnings, fmt.Errorf("apply limits to %s: %w", c.path, err)
	}
	return a.warnings, nil
}

// applier collects the warnings of one Apply call.
type applier struct {
	c        *Cgroup
	warnings []string
	// disabled holds controllers already found unusable, so that each
	// is warned about once.
	disabled map[string]bool
}

func (a *applier) warnf(format string, args ...any) {
	a.warnings = append(a.warnings, fmt.Sprintf(format, args...))
}

// warnUnsupported warns about recorded limits this package never sets.
func (a *applier) warnUnsupported(r *specs.LinuxResources) {
	if len(r.Devices) > 0 {
		a.warnf("device cgroup rules are not restored")
	}
	if r.BlockIO != nil {
		a.warnf("block I/O limits are not restored")
	}
	if len(r.HugepageLimits) > 0 {
		a.warnf("hugetlb limits are not restored")
	}
	if r.Network != nil {
		a.warnf("network class and priority settings are not restored")
	}
	if len(r.Rdma) > 0 {
		a.warnf("rdma limits are not restored")
	}
	if m := r.Memory; m != nil && (m.KernelTCP != nil || m.Swappiness != nil || m.DisableOOMKiller != nil) {
		a.warnf("kernel memory, swappiness and OOM-killer settings are not restored")
	}
	if cpu := r.CPU; cpu != nil && (cpu.Cpus != "" || cpu.Mems != "" || cpu.RealtimeRuntime != nil || cpu.RealtimePeriod != nil || cpu.Idle != nil || cpu.Burst != nil) {
		a.warnf("cpuset, realtime, idle and burst settings are not restored")
	}
}

// write sets dir/file for controller ctl. Missing files and permission
// errors mean the controller is not usable here and become warnings;
// anything else is returned.
func (a *applier) write(ctl, dir, file, value string) error {
	if a.disabled[ctl] {
		return nil
	}
	err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		a.warnf("%s: %s not available in %s, limit %q not set", ctl, file, dir, value)
		return nil
	case errors.Is(err, fs.ErrPermission):
		a.warnf("%s: %s in %s is not delegated to uid %d, limit %q not set", ctl, file, dir, os.Getuid(), value)
		return nil
	default:
		return fmt.Errorf("set %s to %q: %w", filepath.Join(dir, file), value, err)
	}
}

// enableV2 makes sure controller ctl is enabled for the cgroup, enabling
// it in the parent's cgroup.subtree_control when the parent offers it. It
// warns and reports false when that is not possible.
func (a *applier) enableV2(ctl string) bool {
	if a.disabled[ctl] {
		return false
	}
	dir := a.c.path
	if have, err := readTrimmed(filepath.Join(dir, "cgroup.controllers")); err == nil && slices.Contains(strings.Fields(have), ctl) {
		return true
	}
	a.disabled[ctl] = true
	parent := filepath.Dir(dir)
	offered, err := readTrimmed(filepath.Join(parent, "cgroup.controllers"))
	if err != nil || !slices.Contains(strings.Fields(offered), ctl) {
		a.warnf("%s controller is not available to %s; its limits are not set", ctl, parent)
		return false
	}
	if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+"+ctl), 0); err != nil {
		a.warnf("%s controller cannot be enabled in %s (%v); its limits are not set", ctl, parent, err)
		return false
	}
	a.disabled[ctl] = false
	return true
}

func (a *applier) applyV2(r *specs.LinuxResources) error {
	dir := a.c.path
	if m := r.Memory; m != nil && (m.Limit != nil || m.Reservation != nil || m.Swap != nil) && a.enableV2("memory") {
		if m.Limit != nil {
			if err := a.write("memory", dir, "memory.max", formatMax(*m.Limit)); err != nil {
				return err
			}
		}
		if m.Reservation != nil {
			if err := a.write("memory", dir, "memory.low", formatMax(*m.Reservation)); err != nil {
				return err
			}
		}
		if m.Swap != nil {
			// v2 limits swap alone; runtime-spec records memory+swap.
			switch {
			case *m.Swap < 0:
				if err := a.write("memory", dir, "memory.swap.max", "max"); err != nil {
					return err
				}
			case m.Limit != nil && *m.Limit >= 0:
				if *m.Swap < *m.Limit {
					return fmt.Errorf("memory+swap limit %d is below the memory limit %d", *m.Swap, *m.Limit)
				}
				if err := a.write("memory", dir, "memory.swap.max", strconv.FormatInt(*m.Swap-*m.Limit, 10)); err != nil {
					return err
				}
			default:
				a.warnf("memory: memory+swap limit %d without a memory limit cannot be expressed on v2", *m.Swap)
			}
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil && a.enableV2("pids") {
		if err := a.write("pids", dir, "pids.max", formatMax(*p.Limit)); err != nil {
			return err
		}
	}
	if cpu := r.CPU; cpu != nil && (cpu.Quota != nil || cpu.Period != nil || cpu.Shares != nil) && a.enableV2("cpu") {
		if cpu.Quota != nil || cpu.Period != nil {
			quota := "max"
			if cpu.Quota != nil && *cpu.Quota >= 0 {
				quota = strconv.FormatInt(*cpu.Quota, 10)
			}
			v := quota
			if cpu.Period != nil {
				v += " " + strconv.FormatUint(*cpu.Period, 10)
			}
			if err := a.write("cpu", dir, "cpu.max", v); err != nil {
				return err
			}
		}
		if _, raw := r.Unified["cpu.weight"]; cpu.Shares != nil && !raw {
			if err := a.write("cpu", dir, "cpu.weight", strconv.FormatUint(sharesToWeight(*cpu.Shares), 10)); err != nil {
				return err
			}
		}
	}
	for _, k := range sortedKeys(r.Unified) {
		ctl, _, ok := strings.Cut(k, ".")
		if !ok || strings.ContainsAny(k, "/\x00") || k == "." || k == ".." {
			return fmt.Errorf("invalid unified key %q", k)
		}
		if ctl != "cgroup" && !a.enableV2(ctl) {
			continue
		}
		if err := a.write(ctl, dir, k, r.Unified[k]); err != nil {
			return err
		}
	}
	return nil
}

// sharesToWeight maps v1 cpu.shares [2, 262144] onto v2 cpu.weight
// [1, 10000] linearly, the conversion runtimes use for runtime-spec Shares.
func sharesToWeight(shares uint64) uint64 {
	shares = min(max(shares, 2), 262144)
	return 1 + ((shares-2)*9999)/262142
}

func (a *applier) applyV1(r *specs.LinuxResources) error {
	for _, k := range sortedKeys(r.Unified) {
		a.warnf("unified %s=%s needs cgroup v2; not set on v1", k, r.Unified[k])
	}
	dirOf := func(ctl string) (string, bool) {
		d, ok := a.c.companions[ctl]
		if !ok {
			a.warnf("%s: the job has no cgroup in a v1 %s hierarchy; its limits are not set", ctl, ctl)
		}
		return d, ok
	}
	if m := r.Memory; m != nil && (m.Limit != nil || m.Reservation != nil || m.Swap != nil) {
		if dir, ok := dirOf("memory"); ok {
			if err := a.applyV1Memory(dir, m); err != nil {
				return err
			}
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil {
		if dir, ok := dirOf("pids"); ok {
			if err := a.write("pids", dir, "pids.max", formatMax(*p.Limit)); err != nil {
				return err
			}
		}
	}
	if cpu := r.CPU; cpu != nil && (cpu.Shares != nil || cpu.Quota != nil || cpu.Period != nil) {
		if dir, ok := dirOf("cpu"); ok {
			if cpu.Shares != nil {
				if err := a.write("cpu", dir, "cpu.shares", strconv.FormatUint(*cpu.Shares, 10)); err != nil {
					return err
				}
			}
			if cpu.Period != nil {
				if err := a.write("cpu", dir, "cpu.cfs_period_us", strconv.FormatUint(*cpu.Period, 10)); err != nil {
					return err
				}
			}
			if cpu.Quota != nil {
				if err := a.write("cpu", dir, "cpu.cfs_quota_us", strconv.FormatInt(*cpu.Quota, 10)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// applyV1Memory sets the v1 memory limits. The kernel keeps
// memory.memsw.limit_in_bytes >= memory.limit_in_bytes at every step, so
// the memsw limit goes first when it grows and last when it shrinks.
func (a *applier) applyV1Memory(dir string, m *specs.LinuxMemory) error {
	if m.Reservation != nil {
		if err := a.write("memory", dir, "memory.soft_limit_in_bytes", strconv.FormatInt(*m.Reservation, 10)); err != nil {
			return err
		}
	}
	setLimit := func() error {
		if m.Limit == nil {
			return nil
		}
		return a.write("memory", dir, "memory.limit_in_bytes", strconv.FormatInt(*m.Limit, 10))
	}
	if m.Swap == nil {
		return setLimit()
	}
	swapFirst := *m.Swap < 0
	if cur, ok, err := readOpt(dir, "memory.memsw.limit_in_bytes"); err != nil {
		return err
	} else if ok {
		if v, err := strconv.ParseInt(cur, 10, 64); err == nil && *m.Swap > v {
			swapFirst = true
		}
	}
	setSwap := func() error {
		return a.write("memory", dir, "memory.memsw.limit_in_bytes", strconv.FormatInt(*m.Swap, 10))
	}
	if swapFirst {
		if err := setSwap(); err != nil {
			return err
		}
		return setLimit()
	}
	if err := setLimit(); err != nil {
		return err
	}
	return setSwap()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
