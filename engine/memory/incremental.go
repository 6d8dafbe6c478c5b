package memory

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

// An incremental dump compares every page it would store with the page at
// the same address in the parent generation, by checksum: a page whose
// xxHash64 matches is not written again, its run points at the data the
// parent's runs point at (the generation that wrote it, never a chain).
// The checksums of the parent's pages come from its page-sums file, read
// alongside the dump in address order, so the comparison holds no table of
// the whole address space in memory.
//
// Comparing content works on every kernel and for every kind of mapping,
// shared ones included (a write through another process's mapping changes
// the content, whatever the page tables say), at the price of reading all
// of the job's memory at every checkpoint. It is a 64-bit checksum: two
// different pages taken for the same one is a 2^-64 chance per page.
//
// Where the kernel tracks soft-dirty bits (CONFIG_MEM_SOFT_DIRTY: Debian's
// and RHEL's kernels) and the parent generation's dump cleared them, a
// page of a private mapping whose bit is still clear has not been written
// since, and is not even read: its run and checksum are the parent's. Only
// pages this process maps alone are taken on the bit's word: a page shared
// with a forked process may have been written through the other mapping,
// and a page read back as the shared zero page after MADV_DONTNEED shows a
// clear bit over other content than the parent's. Shared mappings are
// always compared by content, as are pages out in swap.

// Parent is the parent generation's record of one process's pages.
type Parent struct {
	// Runs are the parent's page runs of the process, in address order,
	// with every run's Generation set to the generation that holds its
	// data (the parent's own number for the runs it wrote).
	Runs []image.PageRun
	// Sums are the parent's page checksums: one little-endian uint64 per
	// page of Runs, in order.
	Sums io.Reader
	// MinGen is the oldest generation a new run may refer to: data of
	// older ones is written again, so that retention can let them go.
	MinGen int
	// Written is how the pages written since the parent was dumped are
	// told (writetrack.None: they are not): write tracking was armed then,
	// and only then, so a page it shows unchanged is the parent's.
	Written writetrack.Method
}

// cleanSince reports whether the page with pagemap entry e in a mapping of
// kind k is, by write tracking m, the one the parent dumped.
func cleanSince(m writetrack.Method, k image.VMAKind, e uint64) bool {
	if k != image.VMAAnon && k != image.VMAFilePrivate {
		return false
	}
	return m.Unchanged(e)
}

// runCursor walks the parent's runs in address order for the reading side,
// which only needs to know whether the parent has a usable page at an
// address.
type runCursor struct {
	p   *Parent
	run int
}

// has reports whether the parent holds the page at addr in a generation
// new runs may refer to. Calls come in ascending address order.
func (c *runCursor) has(addr uint64) bool {
	runs := c.p.Runs
	for c.run < len(runs) && runs[c.run].Addr+runs[c.run].Pages*pageSize <= addr {
		c.run++
	}
	return c.run < len(runs) && runs[c.run].Addr <= addr && runs[c.run].Generation >= c.p.MinGen
}

// parentCursor walks the parent's runs and checksums in address order.
type parentCursor struct {
	p    *Parent
	sums *bufio.Reader
	run  int    // the run the cursor is in
	page uint64 // pages of that run whose checksums were consumed
	err  error  // a short or unreadable checksum file: no more matches
}

func newParentCursor(p *Parent) *parentCursor {
	return &parentCursor{p: p, sums: bufio.NewReaderSize(p.Sums, 1<<16)}
}

// same reports where the parent holds the page at addr when its checksum
// is sum. Calls come in ascending address order; a page at an address
// below the last one asked about is never matched.
func (c *parentCursor) same(addr, sum uint64) (gen int, off uint64, ok bool) {
	psum, gen, off, ok := c.at(addr)
	if !ok || psum != sum {
		return 0, 0, false
	}
	return gen, off, true
}

// at returns the parent's checksum of the page at addr and where it holds
// its data, if it holds it in a generation new runs may refer to.
func (c *parentCursor) at(addr uint64) (sum uint64, gen int, off uint64, ok bool) {
	if c == nil || c.err != nil {
		return 0, 0, 0, false
	}
	runs := c.p.Runs
	for c.run < len(runs) && runs[c.run].Addr+runs[c.run].Pages*pageSize <= addr {
		c.skip(runs[c.run].Pages - c.page)
		c.run, c.page = c.run+1, 0
	}
	if c.run == len(runs) || runs[c.run].Addr > addr {
		return 0, 0, 0, false
	}
	r := runs[c.run]
	idx := (addr - r.Addr) / pageSize
	if idx < c.page {
		return 0, 0, 0, false
	}
	c.skip(idx - c.page)
	var b [8]byte
	if _, err := io.ReadFull(c.sums, b[:]); err != nil {
		c.err = fmt.Errorf("parent page checksums: %w", err)
		return 0, 0, 0, false
	}
	c.page = idx + 1
	if c.err != nil || r.Generation < c.p.MinGen {
		return 0, 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[:]), r.Generation, r.Offset + idx*pageSize, true
}

// skip passes over the checksums of n pages.
func (c *parentCursor) skip(n uint64) {
	if n == 0 || c.err != nil {
		return
	}
	if _, err := c.sums.Discard(int(n * 8)); err != nil {
		c.err = fmt.Errorf("parent page checksums: %w", err)
	}
}
