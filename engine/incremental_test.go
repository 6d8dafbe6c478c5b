package engine

import (
	"slices"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

func TestRereadRanges(t *testing.T) {
	vmas := []image.VMA{
		{Start: 0x1000, End: 0x9000, Kind: image.VMAAnon},
		{Start: 0x9000, End: 0xa000, Kind: image.VMAAnonShared},
		{Start: 0xa000, End: 0xc000, Kind: image.VMAFilePrivate},
		{Start: 0xc000, End: 0xd000, Kind: image.VMAFileShared},
	}
	for _, c := range []struct {
		name string
		read []memory.ReadRange
		want []writetrack.Range
	}{
		{"nothing read", nil, nil},
		{"private mappings", []memory.ReadRange{{Start: 0x2000, End: 0x3000, VMA: 0}, {Start: 0x5000, End: 0x9000, VMA: 0}, {Start: 0xa000, End: 0xb000, VMA: 2}},
			[]writetrack.Range{{Start: 0x2000, End: 0x3000}, {Start: 0x5000, End: 0x9000}, {Start: 0xa000, End: 0xb000}}},
		{"shared mappings are not tracked", []memory.ReadRange{{Start: 0x9000, End: 0xa000, VMA: 1}, {Start: 0xc000, End: 0xd000, VMA: 3}}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := rereadRanges(vmas, c.read); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
	if got, want := trackedRanges(vmas), []writetrack.Range{{Start: 0x1000, End: 0x9000}, {Start: 0xa000, End: 0xc000}}; !slices.Equal(got, want) {
		t.Errorf("tracked ranges %v, want %v", got, want)
	}
}
