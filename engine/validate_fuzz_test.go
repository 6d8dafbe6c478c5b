package engine

import (
	"encoding/json"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// FuzzValidateCore decodes arbitrary bytes as a core file and validates
// it: validation may refuse, never crash, and what it accepts keeps every
// mapping and page run in the user address space.
func FuzzValidateCore(f *testing.F) {
	good, err := json.Marshal(validProcess())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"pid":2,"threads":[{"tid":2}],"vmas":[{"start":0,"end":18446744073709551615,"kind":"anon"}]}`))
	f.Add([]byte(`{"pid":2,"threads":[{"tid":2}],"files":[{"fd":2147483648,"kind":"file","path":"/x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p image.Process
		if json.Unmarshal(b, &p) != nil {
			return
		}
		gen := &image.Generation{Gen: 1, Manifest: &image.Manifest{Processes: []image.ProcessRef{{PID: p.PID}}}}
		if validateImage(gen, []*image.Process{&p}) != nil || p.State == image.ProcZombie {
			return
		}
		for _, v := range p.VMAs {
			if v.Kind != image.VMAVsyscall && (v.End > abi.TaskSize || v.Start >= v.End) {
				t.Fatalf("accepted mapping %#x-%#x", v.Start, v.End)
			}
		}
		for _, r := range p.PageRuns {
			if r.Addr+r.Pages*pageSize > abi.TaskSize || r.Addr+r.Pages*pageSize < r.Addr {
				t.Fatalf("accepted page run of %d pages at %#x", r.Pages, r.Addr)
			}
		}
	})
}
