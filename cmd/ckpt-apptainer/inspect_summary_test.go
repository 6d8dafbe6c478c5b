package main

import (
	"maps"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestSummarizeMemory(t *testing.T) {
	tests := []struct {
		name string
		p    image.Process
		want map[image.VMAKind]memoryFigures
	}{
		{name: "no mappings", want: map[image.VMAKind]memoryFigures{}},
		{name: "unsorted mappings, run over two", p: image.Process{
			VMAs: []image.VMA{
				{Start: 0x3000, End: 0x4000, Kind: image.VMAFileShared},
				{Start: 0x1000, End: 0x3000, Kind: image.VMAAnon},
			},
			PageRuns: []image.PageRun{{Addr: 0x2000, Pages: 2}},
		}, want: map[image.VMAKind]memoryFigures{
			image.VMAAnon:       {Mappings: 1, Bytes: 0x2000, PageBytes: 0x1000},
			image.VMAFileShared: {Mappings: 1, Bytes: 0x1000, PageBytes: 0x1000},
		}},
		{name: "pages outside every mapping", p: image.Process{
			VMAs:     []image.VMA{{Start: 0x1000, End: 0x2000, Kind: image.VMAAnon}},
			PageRuns: []image.PageRun{{Addr: 0x1000, Pages: 3}},
		}, want: map[image.VMAKind]memoryFigures{
			image.VMAAnon: {Mappings: 1, Bytes: 0x1000, PageBytes: 0x1000},
			vmaUnmapped:   {PageBytes: 0x2000},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := summarizeMemory(&tt.p)
			if !maps.Equal(u.ByKind, tt.want) {
				t.Errorf("by kind %+v, want %+v", u.ByKind, tt.want)
			}
			var total memoryFigures
			for _, f := range tt.want {
				total.add(f)
			}
			if u.memoryFigures != total {
				t.Errorf("total %+v, want %+v", u.memoryFigures, total)
			}
		})
	}
}
