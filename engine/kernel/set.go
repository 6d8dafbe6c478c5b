package kernel

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Status is what the probe found for one feature.
type Status struct {
	Name Feature `json:"name"`
	// Available says the tool uses the feature: the kernel has it and
	// CKPT_APPTAINER_DISABLE did not switch it off.
	Available bool `json:"available"`
	// Disabled says the kernel has it but CKPT_APPTAINER_DISABLE
	// switched it off.
	Disabled bool `json:"disabled,omitempty"`
	// Detail says what the probe saw when the kernel lacks it.
	Detail string `json:"detail,omitempty"`
}

// Set is the result of probing one kernel.
type Set struct {
	// Release is the kernel release (uname -r).
	Release string `json:"release"`
	// LastCap is the highest capability the kernel knows
	// (/proc/sys/kernel/cap_last_cap).
	LastCap int `json:"cap_last_cap"`
	// Features has one entry per feature, in Infos' order.
	Features []Status `json:"features"`
}

// Has reports whether the tool may use f.
func (s *Set) Has(f Feature) bool {
	for _, st := range s.Features {
		if st.Name == f {
			return st.Available
		}
	}
	return false
}

// Status returns the entry of f.
func (s *Set) Status(f Feature) Status {
	for _, st := range s.Features {
		if st.Name == f {
			return st
		}
	}
	return Status{Name: f, Detail: "not probed"}
}

// Missing lists the features the tool goes without, disabled ones included.
func (s *Set) Missing() []Feature {
	var out []Feature
	for _, st := range s.Features {
		if !st.Available {
			out = append(out, st.Name)
		}
	}
	return out
}

// Why says in words why f is not used: switched off, or what the probe saw.
func (s *Set) Why(f Feature) string {
	st := s.Status(f)
	switch {
	case st.Available:
		return "available"
	case st.Disabled:
		return "switched off by $" + EnvDisable
	case st.Detail != "":
		return "not in kernel " + s.Release + ": " + st.Detail
	default:
		return "not in kernel " + s.Release
	}
}

// Lacks says that the tool goes without f, as the start of a sentence:
// "kernel 5.10.0-32-amd64 has no time namespaces", or that the feature was
// switched off.
func (s *Set) Lacks(f Feature) string {
	what := Describe(f).What
	if s.Status(f).Disabled {
		return fmt.Sprintf("%s is switched off by $%s", what, EnvDisable)
	}
	return fmt.Sprintf("kernel %s has no %s", s.Release, what)
}

// Without returns a copy of s with the features fs switched off, as
// CKPT_APPTAINER_DISABLE would: for tests of a fallback (with Adopt).
func (s *Set) Without(fs ...Feature) *Set {
	off := map[Feature]bool{}
	for _, f := range fs {
		off[f] = true
	}
	return s.withDisabled(off)
}

// withDisabled returns a copy of s with the features in off switched off.
func (s *Set) withDisabled(off map[Feature]bool) *Set {
	out := *s
	out.Features = append([]Status(nil), s.Features...)
	for i, st := range out.Features {
		if off[st.Name] && st.Available {
			out.Features[i].Available = false
			out.Features[i].Disabled = true
		}
	}
	return &out
}

var (
	// mu protects the fields below.
	mu sync.Mutex
	// current is the set every Has answers from, once probed or adopted.
	current *Set
	// currentErr is the error of a bad CKPT_APPTAINER_DISABLE.
	currentErr error
)

// Probe returns the features of the running kernel, with those named in
// CKPT_APPTAINER_DISABLE switched off. The kernel is probed on the first
// call only. A bad CKPT_APPTAINER_DISABLE is an error, returned with the
// set of the kernel as it is; the command line checks it before anything
// else, so Has, which ignores it, never meets it in practice.
func Probe() (*Set, error) {
	mu.Lock()
	defer mu.Unlock()
	if current == nil {
		raw := probeAll()
		off, err := ParseDisable(os.Getenv(EnvDisable))
		if err != nil {
			current, currentErr = raw, err
		} else {
			current = raw.withDisabled(off)
		}
	}
	return current, currentErr
}

// Has reports whether the tool may use f on this kernel.
func Has(f Feature) bool {
	s, _ := Probe()
	return s.Has(f)
}

// Current returns the set Has answers from.
func Current() *Set {
	s, _ := Probe()
	return s
}

// Adopt makes s the answer of every later Has, without probing: the
// sandbox init takes the supervisor's set, so that both agree and init
// starts no probe process inside the job's PID namespace.
func Adopt(s *Set) {
	mu.Lock()
	defer mu.Unlock()
	current, currentErr = s, nil
}

// probeAll probes every feature.
func probeAll() *Set {
	s := &Set{Release: release(), LastCap: lastCap()}
	for _, i := range infos {
		ok, detail := probes[i.Name](s)
		st := Status{Name: i.Name, Available: ok}
		if !ok {
			st.Detail = detail
		}
		s.Features = append(s.Features, st)
	}
	return s
}

// release is the kernel release, as uname -r prints it.
func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// lastCap reads the highest capability the kernel knows. Kernels before
// 3.2 have no such file; 36 (CAP_BLOCK_SUSPEND) is their last.
func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 36
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 36
	}
	return n
}

// LastCap is the highest capability of this kernel.
func LastCap() int { return Current().LastCap }

// FilterCaps returns the capabilities of caps this kernel knows: raising
// one it does not (CAP_CHECKPOINT_RESTORE on 4.18) fails.
func FilterCaps(caps []uintptr) []uintptr {
	top := uintptr(LastCap())
	out := make([]uintptr, 0, len(caps))
	for _, c := range caps {
		if c <= top {
			out = append(out, c)
		}
	}
	return out
}

// errnoDetail names the error a probe saw.
func errnoDetail(call string, err error) string {
	if e, ok := err.(unix.Errno); ok {
		return fmt.Sprintf("%s: %s (%s)", call, unix.ErrnoName(e), e.Error())
	}
	return fmt.Sprintf("%s: %v", call, err)
}
