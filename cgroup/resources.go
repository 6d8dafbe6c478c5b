package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// v1Unlimited is the smallest value a v1 limit file shows for "no limit":
// the kernel reports its page-rounded maximum (0x7ffffffffffff000 with 4 KiB
// pages), and no real limit comes near 2^62 bytes.
const v1Unlimited = int64(1) << 62

// Resources returns the limits in force in the cgroup as runtime-spec
// resources. On v2 it reads memory.max, memory.low, memory.high,
// memory.swap.max, pids.max, cpu.max and cpu.weight where the controllers
// are enabled; on v1 the memory, pids and cpu files of the job's
// directories in those hierarchies. A controller that is absent leaves its
// field nil. Unlimited values read as -1. Values the typed fields cannot
// hold exactly (memory.high, cpu.weight, a swap limit without a memory
// limit) go to Unified under their v2 file name.
func (c *Cgroup) Resources() (*specs.LinuxResources, error) {
	var r *specs.LinuxResources
	var err error
	if c.version == V2 {
		r, err = c.resourcesV2()
	} else {
		r, err = c.resourcesV1()
	}
	if err != nil {
		return nil, fmt.Errorf("read limits of %s: %w", c.path, err)
	}
	return r, nil
}

func (c *Cgroup) resourcesV2() (*specs.LinuxResources, error) {
	r := &specs.LinuxResources{}
	unified := map[string]string{}
	if max, ok, err := readOpt(c.path, "memory.max"); err != nil {
		return nil, err
	} else if ok {
		m := &specs.LinuxMemory{}
		limit, err := parseMax(max)
		if err != nil {
			return nil, fmt.Errorf("memory.max: %w", err)
		}
		m.Limit = &limit
		if low, ok, err := readOpt(c.path, "memory.low"); err != nil {
			return nil, err
		} else if ok {
			v, err := parseMax(low)
			if err != nil {
				return nil, fmt.Errorf("memory.low: %w", err)
			}
			m.Reservation = &v
		}
		if high, ok, err := readOpt(c.path, "memory.high"); err != nil {
			return nil, err
		} else if ok {
			unified["memory.high"] = high
		}
		if swap, ok, err := readOpt(c.path, "memory.swap.max"); err != nil {
			return nil, err
		} else if ok {
			// runtime-spec's Swap is memory plus swap, as in v1.
			s, err := parseMax(swap)
			switch {
			case err != nil:
				return nil, fmt.Errorf("memory.swap.max: %w", err)
			case s < 0:
				m.Swap = &s
			case limit >= 0:
				total := limit + s
				m.Swap = &total
			default:
				unified["memory.swap.max"] = swap
			}
		}
		r.Memory = m
	}
	if max, ok, err := readOpt(c.path, "pids.max"); err != nil {
		return nil, err
	} else if ok {
		v, err := parseMax(max)
		if err != nil {
			return nil, fmt.Errorf("pids.max: %w", err)
		}
		r.Pids = &specs.LinuxPids{Limit: &v}
	}
	if max, ok, err := readOpt(c.path, "cpu.max"); err != nil {
		return nil, err
	} else if ok {
		f := strings.Fields(max)
		if len(f) != 2 {
			return nil, fmt.Errorf("cpu.max: malformed %q", max)
		}
		quota, err := parseMax(f[0])
		if err != nil {
			return nil, fmt.Errorf("cpu.max: %w", err)
		}
		period, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("cpu.max: %w", err)
		}
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
		if w, ok, err := readOpt(c.path, "cpu.weight"); err != nil {
			return nil, err
		} else if ok {
			unified["cpu.weight"] = w
		}
	}
	if len(unified) > 0 {
		r.Unified = unified
	}
	return r, nil
}

func (c *Cgroup) resourcesV1() (*specs.LinuxResources, error) {
	r := &specs.LinuxResources{}
	if dir, ok := c.companions["memory"]; ok {
		m := &specs.LinuxMemory{}
		for _, f := range []struct {
			file string
			dst  **int64
		}{
			{"memory.limit_in_bytes", &m.Limit},
			{"memory.soft_limit_in_bytes", &m.Reservation},
			{"memory.memsw.limit_in_bytes", &m.Swap},
		} {
			s, ok, err := readOpt(dir, f.file)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.file, err)
			}
			if v >= v1Unlimited {
				v = -1
			}
			*f.dst = &v
		}
		r.Memory = m
	}
	if dir, ok := c.companions["pids"]; ok {
		s, ok, err := readOpt(dir, "pids.max")
		if err != nil {
			return nil, err
		}
		if ok {
			v, err := parseMax(s)
			if err != nil {
				return nil, fmt.Errorf("pids.max: %w", err)
			}
			r.Pids = &specs.LinuxPids{Limit: &v}
		}
	}
	if dir, ok := c.companions["cpu"]; ok {
		cpu := &specs.LinuxCPU{}
		if s, ok, err := readOpt(dir, "cpu.shares"); err != nil {
			return nil, err
		} else if ok {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("cpu.shares: %w", err)
			}
			cpu.Shares = &v
		}
		if s, ok, err := readOpt(dir, "cpu.cfs_quota_us"); err != nil {
			return nil, err
		} else if ok {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("cpu.cfs_quota_us: %w", err)
			}
			cpu.Quota = &v
		}
		if s, ok, err := readOpt(dir, "cpu.cfs_period_us"); err != nil {
			return nil, err
		} else if ok {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("cpu.cfs_period_us: %w", err)
			}
			cpu.Period = &v
		}
		r.CPU = cpu
	}
	return r, nil
}

// readOpt reads dir/file; ok is false when the file does not exist (the
// controller is not enabled there).
func readOpt(dir, file string) (string, bool, error) {
	s, err := readTrimmed(filepath.Join(dir, file))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return s, true, nil
}

// parseMax parses a v2 limit, where "max" means unlimited (-1).
func parseMax(s string) (int64, error) {
	if s == "max" {
		return -1, nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// formatMax writes a limit for a v2 file; negative means unlimited.
func formatMax(v int64) string {
	if v < 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}
