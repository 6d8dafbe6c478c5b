package engine

import (
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestStubBase(t *testing.T) {
	const size = 0x10000
	tests := []struct {
		name string
		vmas []image.VMA
		want uint64
	}{
		{"empty low memory", []image.VMA{{Start: 0x555555554000, End: 0x555555556000}}, 0x101000},
		{"binary at 4 MiB leaves the low gap", []image.VMA{{Start: 0x400000, End: 0x500000}}, 0x101000},
		{"low mapping pushes the stub up", []image.VMA{{Start: 0x100000, End: 0x180000}}, 0x181000},
		{"gap too small is skipped", []image.VMA{{Start: 0x100000, End: 0x180000}, {Start: 0x185000, End: 0x200000}}, 0x201000},
		{"vsyscall ignored", []image.VMA{{Start: 0xffffffffff600000, End: 0xffffffffff601000, Kind: image.VMAVsyscall}}, 0x101000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stubBase(tt.vmas, size)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("stubBase = %#x, want %#x", got, tt.want)
			}
			for _, v := range tt.vmas {
				if v.Kind != image.VMAVsyscall && got < v.End && v.Start < got+size {
					t.Fatalf("stub %#x overlaps %#x-%#x", got, v.Start, v.End)
				}
			}
		})
	}
	if _, err := stubBase([]image.VMA{{Start: 0x100000, End: 0x7f0000000000}}, size); err == nil {
		t.Fatal("a full address space must be refused")
	}
}
