package proc

import (
	"fmt"
	"os"
	"unsafe"
)

// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	PagePresent     = 1 << 63
	PageSwapped     = 1 << 62
	PageFileShared  = 1 << 61 // page is a file page or shared anonymous
	PageGuardRegion = 1 << 58 // installed with MADV_GUARD_INSTALL
	PageUffdWP      = 1 << 57 // write-protected by a userfaultfd, not written since
	PageExclusive   = 1 << 56 // mapped by this process alone
	PageSoftDirty   = 1 << 55 // written since the last clear_refs "4"
)

// Pagemap reads pagemap entries of one process.
type Pagemap struct {
	f *os.File
}

// OpenPagemap opens /proc/pid/pagemap. Unprivileged readers get the flag
// bits but zeroed frame numbers, which is all the engine needs.
func OpenPagemap(pid int) (*Pagemap, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, fmt.Errorf("open pagemap of %d: %w", pid, err)
	}
	return &Pagemap{f: f}, nil
}

// Close closes the pagemap file.
func (p *Pagemap) Close() error { return p.f.Close() }

// Read returns the entries for the pages in [start, end), reusing buf.
func (p *Pagemap) Read(start, end uint64, buf []uint64) ([]uint64, error) {
	n := int((end - start) / 4096)
	if cap(buf) < n {
		buf = make([]uint64, n)
	}
	buf = buf[:n]
	if n == 0 {
		return buf, nil
	}
	// Entries are native-endian 64-bit words: read them in place.
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), 8*n)
	if _, err := p.f.ReadAt(raw, int64(start/4096*8)); err != nil {
		return nil, fmt.Errorf("read pagemap %#x-%#x: %w", start, end, err)
	}
	return buf, nil
}
