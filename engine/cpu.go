package engine

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/xstate"
)

// A restored job runs the code it was running: code that checked for AVX2
// or AVX-512 once, at start, uses it without asking again. So a checkpoint
// records the instruction-set extensions the CPU offered the job (those
// /proc/cpuinfo lists, which the kernel only lists when it enables their
// register state), and a restart on a node whose CPU lacks any of them is
// refused before anything starts. A node with more is fine.

// isaFlags are the /proc/cpuinfo flags of instruction-set extensions a
// program can use from user space. Other flags (virtualization, power,
// errata) differ between nodes without mattering to a program.
var isaFlags = map[string]bool{
	"mmx": true, "sse": true, "sse2": true, "ssse3": true, "sse4_1": true, "sse4_2": true, "sse4a": true,
	"pni": true, "cx8": true, "cx16": true, "cmov": true, "popcnt": true, "abm": true, "lzcnt": true,
	"movbe": true, "bmi1": true, "bmi2": true, "adx": true, "aes": true, "pclmulqdq": true, "sha_ni": true,
	"rdrand": true, "rdseed": true, "f16c": true, "fma": true, "fma4": true, "xop": true, "tbm": true,
	"avx": true, "avx2": true, "avx_vnni": true, "avx_vnni_int8": true, "avx_ifma": true, "avx_ne_convert": true,
	"avx512f": true, "avx512dq": true, "avx512cd": true, "avx512bw": true, "avx512vl": true,
	"avx512ifma": true, "avx512vbmi": true, "avx512_vbmi2": true, "avx512_vnni": true, "avx512_bitalg": true,
	"avx512_vpopcntdq": true, "avx512_bf16": true, "avx512_fp16": true, "avx512_vp2intersect": true,
	"avx512_4vnniw": true, "avx512_4fmaps": true,
	"amx_tile": true, "amx_int8": true, "amx_bf16": true, "amx_fp16": true, "amx_complex": true,
	"gfni": true, "vaes": true, "vpclmulqdq": true, "xsave": true, "xsaveopt": true, "xsavec": true,
	"xsaves": true, "fsgsbase": true, "erms": true, "fsrm": true, "rdpid": true, "clflushopt": true,
	"clwb": true, "clzero": true, "movdiri": true, "movdir64b": true, "serialize": true, "pku": true,
	"ospke": true, "waitpkg": true, "cldemote": true, "sha512": true, "sm3": true, "sm4": true,
	"apx": true, "avx10": true,
}

// cpuInfo reads the CPU model and the ISA flags of /proc/cpuinfo (those of
// the first processor; a node's processors are alike).
func cpuInfo() (*image.CPU, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return nil, fmt.Errorf("cpu features: %w", err)
	}
	defer f.Close()
	cpu, err := parseCPUInfo(bufio.NewScanner(f))
	if err != nil {
		return nil, err
	}
	cpu.XState, cpu.XFeatures = xstate.Local(), xstate.Enabled()
	return cpu, nil
}

func parseCPUInfo(sc *bufio.Scanner) (*image.CPU, error) {
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	cpu := &image.CPU{}
	seenFlags := false
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if cpu.Model == "" {
				cpu.Model = strings.TrimSpace(v)
			}
		case "flags":
			if seenFlags {
				continue
			}
			seenFlags = true
			for _, fl := range strings.Fields(v) {
				if isaFlags[fl] {
					cpu.Flags = append(cpu.Flags, fl)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cpu features: %w", err)
	}
	if !seenFlags {
		return nil, fmt.Errorf("cpu features: /proc/cpuinfo has no flags line")
	}
	sort.Strings(cpu.Flags)
	return cpu, nil
}

// extraXFeatures are the register state components this node's CPU
// enables that some node the job ran on did not.
func extraXFeatures(want, have *image.CPU) uint64 {
	if want.XFeatures == 0 || have.XFeatures == 0 {
		return 0 // an image or a CPU that does not say
	}
	return have.XFeatures &^ want.XFeatures
}

// missingCPUFlags lists the flags of want this node's CPU lacks.
func missingCPUFlags(want, have *image.CPU) []string {
	got := map[string]bool{}
	for _, f := range have.Flags {
		got[f] = true
	}
	var missing []string
	for _, f := range want.Flags {
		if !got[f] {
			missing = append(missing, f)
		}
	}
	return missing
}

// CPUSeen is what a checkpoint records of the CPUs a job has run on: a
// process may have looked at the CPU's features on any of them, so the
// flags are those of every one (with the model of the latest). seen is what
// the job's previous checkpoint recorded, nil for a new job.
func CPUSeen(seen *image.CPU) (*image.CPU, error) {
	here, err := cpuInfo()
	if err != nil || seen == nil {
		return here, err
	}
	flags := map[string]bool{}
	for _, f := range append(append([]string(nil), seen.Flags...), here.Flags...) {
		flags[f] = true
	}
	// The threads' XSAVE areas are read here, in this CPU's layout.
	out := &image.CPU{Model: here.Model, XState: here.XState, XFeatures: here.XFeatures}
	if seen.XFeatures != 0 {
		out.XFeatures &= seen.XFeatures
	}
	for f := range flags {
		out.Flags = append(out.Flags, f)
	}
	sort.Strings(out.Flags)
	return out, nil
}

// checkXState refuses, before anything starts, a process whose threads
// use register state this CPU cannot take: a component it lacks, or one
// of another size. The flags check names most of them; this is the one a
// restore would otherwise fail on half-way.
func checkXState(p *image.Process, cpu *image.CPU) error {
	if cpu == nil || len(cpu.XState) == 0 {
		return nil
	}
	here := xstate.Local()
	for _, th := range p.Threads {
		if len(th.XState) == 0 {
			continue
		}
		if err := xstate.Movable(th.XState, cpu.XState, here); err != nil {
			return fmt.Errorf("thread %d: %w (checkpointed on %q)", th.TID, err, cpu.Model)
		}
	}
	return nil
}

// xstateHere is a thread's recorded XSAVE area as this CPU takes it: the
// kernel accepts only an area of its own size, in its own layout, which
// on another CPU model (a requeue onto another node) differ.
func (r *restorer) xstateHere(tid int, saved []byte) ([]byte, error) {
	if len(saved) == 0 {
		return nil, nil
	}
	var from xstate.Layout
	model := "another CPU"
	if cpu := r.job.opts.Gen.Manifest.CPU; cpu != nil {
		from, model = cpu.XState, fmt.Sprintf("%q", cpu.Model)
	}
	here := xstate.Local()
	// The same layout is the same area: the node the job ran on, or one
	// like it. Only another layout needs this CPU's area size.
	if len(from) > 0 && from.Equal(here) {
		return saved, nil
	}
	current, err := r.t.GetXState(tid)
	if err != nil {
		return nil, err
	}
	if len(from) == 0 {
		if len(current) != len(saved) {
			return nil, fmt.Errorf("the XSAVE area is %d bytes here, %d on %s, and the image does not record its layout: restart on a node with that CPU",
				len(current), len(saved), model)
		}
		return saved, nil
	}
	r.log.Debugf("tid %d: XSAVE area moved from the layout of %s (%d bytes) to this CPU's (%d bytes)", tid, model, len(saved), len(current))
	return xstate.Convert(saved, from, len(current), here)
}
