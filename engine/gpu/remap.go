package gpu

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

// Pair maps a GPU a process was checkpointed on to the GPU it is restored
// onto (CUcheckpointGpuPair), by UUID.
type Pair struct {
	Old string `json:"old"`
	New string `json:"new"`
}

// Given lists the node's GPUs this job may use: Slurm's binding
// (SLURM_STEP_GPUS, else SLURM_JOB_GPUS: device numbers), else those
// CUDA_VISIBLE_DEVICES names (UUIDs, or indices taken in PCI order), else
// every GPU of the node.
func Given(n *Node, env func(string) string) []Device {
	for _, key := range []string{"SLURM_STEP_GPUS", "SLURM_JOB_GPUS"} {
		v := strings.TrimSpace(env(key))
		if v == "" {
			continue
		}
		var out []Device
		for _, f := range strings.Split(v, ",") {
			if m, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
				if d, ok := n.ByMinor(m); ok {
					out = append(out, d)
				}
			}
		}
		return out
	}
	v := strings.TrimSpace(env("CUDA_VISIBLE_DEVICES"))
	if v == "" {
		return n.Devices
	}
	var out []Device
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if i, err := strconv.Atoi(f); err == nil {
			if i >= 0 && i < len(n.Devices) {
				out = append(out, n.Devices[i])
			}
			continue
		}
		for _, d := range n.Devices {
			if d.UUID == f || strings.HasPrefix(d.UUID, f) {
				out = append(out, d)
			}
		}
	}
	return out
}

// Remap maps every GPU the image's processes used onto one of given: the
// same GPU when the job was given it, else another of the same model not
// mapped yet. It refuses, listing the image's GPUs and the ones given,
// when a GPU has no match. All pairs are identities on the node that took
// the checkpoint.
func Remap(rec *image.GPU, given []Device) ([]Pair, error) {
	have := map[string]bool{}
	for _, d := range given {
		have[d.UUID] = true
	}
	var pairs []Pair
	mapped := map[string]string{}
	taken := map[string]bool{}
	var old []image.GPUDevice
	for _, p := range rec.Processes {
		for _, d := range p.Devices {
			if _, ok := mapped[d.UUID]; !ok {
				mapped[d.UUID] = ""
				old = append(old, d)
			}
		}
	}
	// Identities first, so that a GPU still given is not taken by another.
	for _, d := range old {
		if have[d.UUID] {
			mapped[d.UUID], taken[d.UUID] = d.UUID, true
		}
	}
	for _, d := range old {
		if mapped[d.UUID] != "" {
			continue
		}
		for _, g := range given {
			if !taken[g.UUID] && g.Model == d.Model {
				mapped[d.UUID], taken[g.UUID] = g.UUID, true
				break
			}
		}
		if mapped[d.UUID] == "" {
			var giv []string
			for _, g := range given {
				giv = append(giv, g.Model+" "+g.UUID)
			}
			if len(giv) == 0 {
				giv = append(giv, "none")
			}
			return nil, &node.Error{Err: fmt.Errorf("the job's GPU processes cannot be restored here: the job used %s %s, and no GPU of that model is free among those this job was given (%s)",
				d.Model, d.UUID, strings.Join(giv, ", "))}
		}
	}
	for _, d := range old {
		pairs = append(pairs, Pair{Old: d.UUID, New: mapped[d.UUID]})
	}
	return pairs, nil
}

// Moved reports whether any pair maps a GPU onto another.
func Moved(pairs []Pair) bool {
	for _, p := range pairs {
		if p.Old != p.New {
			return true
		}
	}
	return false
}

// UUIDBytes is the 16 bytes (CUuuid) of a UUID as the driver prints it,
// "GPU-2f1c4b6e-....".
func UUIDBytes(s string) ([16]byte, error) {
	var out [16]byte
	h := strings.ReplaceAll(strings.TrimPrefix(s, "GPU-"), "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 {
		return out, fmt.Errorf("GPU UUID %q: want GPU- and 32 hex digits", s)
	}
	copy(out[:], b)
	return out, nil
}
