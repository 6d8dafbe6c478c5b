package memory

// ReadRange is an address range whose pages a dump read from the process,
// [Start, End), in the mapping VMA (an index into the dumped VMAs).
type ReadRange struct {
	Start, End uint64
	VMA        int
}

// noteRead records that the dump reads pages [addr, addr+n*pageSize) of
// mapping vma: the pages write tracking has to watch again, as those it
// found unchanged are still watched.
func (d *Dumper) noteRead(vma int, addr uint64, n int) {
	end := addr + uint64(n)*pageSize
	if last := len(d.readRanges) - 1; last >= 0 && d.readRanges[last].VMA == vma && d.readRanges[last].End == addr {
		d.readRanges[last].End = end
		return
	}
	d.readRanges = append(d.readRanges, ReadRange{Start: addr, End: end, VMA: vma})
}

// ReadRanges are the ranges of pages the dump read, in address order: all
// it stored, zero pages included, and none it found unchanged by write
// tracking.
func (d *Dumper) ReadRanges() []ReadRange { return d.readRanges }
