package engine

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/xstate"
)

// requirements lists the kernel features a restart of the checkpoint needs
// (kernel feature names, sorted): those without which the job would not go
// on as it was. The fallbacks the engine has for everything else do not
// show here.
func requirements(m *image.Manifest, procs []*image.Process) []string {
	need := map[kernel.Feature]bool{}
	if m.Time != nil {
		need[kernel.TimeNamespace] = true
	}
	for _, p := range procs {
		for _, th := range p.Threads {
			if th.Rseq != nil {
				need[kernel.Rseq] = true
			}
		}
	}
	out := make([]string, 0, len(need))
	for f := range need {
		out = append(out, string(f))
	}
	sort.Strings(out)
	return out
}

// RequirementError names the features a node lacks for a checkpoint.
type RequirementError struct {
	Generation int
	Missing    []string // "feature (why)"
	// TimeNamespace is set when the time namespace is among them, which
	// --no-timens gives up.
	TimeNamespace bool
}

func (e *RequirementError) Error() string {
	msg := fmt.Sprintf("generation %d needs what this node lacks: %s", e.Generation, strings.Join(e.Missing, "; "))
	if e.TimeNamespace {
		msg += "; to resume without a time namespace (the job's CLOCK_MONOTONIC then jumps), restart with --no-timens"
	}
	return msg + " (`ckpt-apptainer check` lists what this node has)"
}

// CheckRequirements refuses, before anything is started, a restart of m on
// a kernel that lacks a feature the checkpoint needs, or that cannot give
// the job's processes their PIDs at all. noTimeNamespace says the caller
// restores without a time namespace anyway.
func CheckRequirements(m *image.Manifest, noTimeNamespace bool) error {
	s := kernel.Current()
	e := &RequirementError{Generation: m.Generation}
	for _, name := range m.Requires {
		f := kernel.Feature(name)
		if f == kernel.TimeNamespace && noTimeNamespace {
			continue
		}
		if !s.Has(f) {
			e.Missing = append(e.Missing, fmt.Sprintf("%s (%s)", f, s.Why(f)))
			e.TimeNamespace = e.TimeNamespace || f == kernel.TimeNamespace
		}
	}
	if m.CPU != nil {
		here, err := cpuInfo()
		if err != nil {
			return err
		}
		if miss := missingCPUFlags(m.CPU, here); len(miss) > 0 {
			e.Missing = append(e.Missing, fmt.Sprintf("the CPU extensions %s, which the job may use (checkpointed on %q, this node has %q)",
				strings.Join(miss, " "), m.CPU.Model, here.Model))
		}
		if extra := extraXFeatures(m.CPU, here); extra != 0 {
			e.Missing = append(e.Missing, fmt.Sprintf("a CPU enabling no register state the job's nodes did not: this one adds %s, and the job's programs sized their register save areas without it (glibc's dynamic linker does), so they would overflow them; restart on a node like the one the job started on",
				strings.Join(xstate.Names(extra), ", ")))
		}
	}
	if !s.Has(kernel.Clone3SetTID) && !s.Has(kernel.NSLastPID) {
		e.Missing = append(e.Missing, fmt.Sprintf("%s or %s, to give the processes their PIDs (%s; %s)",
			kernel.Clone3SetTID, kernel.NSLastPID, s.Why(kernel.Clone3SetTID), s.Why(kernel.NSLastPID)))
	}
	if len(e.Missing) > 0 {
		return e
	}
	return nil
}
