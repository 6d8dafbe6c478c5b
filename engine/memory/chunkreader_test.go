package memory

import (
	"testing"
)

func TestPlanChunks(t *testing.T) {
	const mib = 1 << 20
	ext := []extent{
		{off: 0, addr: 0x100000, len: 10 * mib},
		{off: 10 * mib, addr: 0x900000000, len: 10 * mib}, // contiguous in the file
		{off: 40 * mib, addr: 0x200000, len: 4096},        // after a gap
	}
	plans := planChunks(ext)
	if len(plans) != 2 {
		t.Fatalf("%d chunks, want 2: %+v", len(plans), plans)
	}
	first, second := plans[0], plans[1]
	if first.size != fillChunk || len(first.reads) != 1 || first.reads[0] != (extent{off: 0, addr: 0, len: fillChunk}) {
		t.Errorf("first chunk: size %d, reads %+v; want one read of the file's first %d bytes", first.size, first.reads, fillChunk)
	}
	if len(first.ext) != 2 || first.ext[1] != (extent{off: 10 * mib, addr: 0x900000000, len: 6 * mib}) {
		t.Errorf("first chunk's pieces: %+v", first.ext)
	}
	wantReads := []extent{{off: 16 * mib, addr: 0, len: 4 * mib}, {off: 40 * mib, addr: 4 * mib, len: 4096}}
	if len(second.reads) != 2 || second.reads[0] != wantReads[0] || second.reads[1] != wantReads[1] {
		t.Errorf("second chunk's reads %+v, want %+v", second.reads, wantReads)
	}
	if second.ext[0].addr != 0x900000000+6*mib || second.size != 4*mib+4096 {
		t.Errorf("second chunk: %+v", second)
	}
	var total uint64
	for _, p := range plans {
		for _, e := range p.ext {
			total += e.len
		}
	}
	if total != 20*mib+4096 {
		t.Errorf("the chunks hold %d bytes, the extents %d", total, 20*mib+4096)
	}
}
