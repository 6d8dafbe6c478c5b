package memory

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/stub"
)

const pageSize = image.PageSize

// Counter follows the page data on its way to or from disk.
type Counter interface {
	// Add counts n more bytes.
	Add(n int64)
}

// Restorer rebuilds the address space of one process in its stub.
type Restorer struct {
	P   *inject.Process
	Img *image.Process
	// Layout is where the stub lives: everything else of the stub's
	// address space goes, the stub's range stays until the process is
	// released.
	Layout stub.Layout
	Log    logrus.FieldLogger
	// Progress counts the page data filled in; nil when no one follows
	// it.
	Progress Counter
	// Unverified says the generation's own page file has not been
	// checked against its checksum yet: the fill verifies it as it reads
	// it (or first, when it reads it in parts), and fails on a mismatch.
	Unverified bool
	// Shmem returns a descriptor in P of the shared memory object (a
	// memfd standing for it) that v maps; the caller closes it once
	// mapped.
	Shmem func(v *image.VMA) (uint64, error)
}

// Restore rebuilds the address space from the image: the stub's special
// mappings are parked, every mapping re-created, the page data filled in
// from page file pages of gen, the recorded protections set and the vDSO
// and vvar moved where they were. It returns the bytes of page data.
func (r *Restorer) Restore(gen *image.Generation, pages string) (int64, error) {
	p := r.Img
	parked, err := r.parkSpecialMappings()
	if err != nil {
		return 0, fmt.Errorf("vdso: %w", err)
	}
	t0 := time.Now()
	if err := r.mapVMAs(); err != nil {
		return 0, err
	}
	r.Log.Debugf("pid %d: %d mappings re-created in %v", p.PID, len(p.VMAs), time.Since(t0))
	t0 = time.Now()
	n, err := r.fillPages(gen, pages)
	if err != nil {
		return 0, err
	}
	r.Log.Debugf("pid %d: %d bytes of pages filled in %v", p.PID, n, time.Since(t0))
	if err := r.finishVMAs(); err != nil {
		return 0, err
	}
	if err := r.placeSpecialMappings(parked); err != nil {
		return 0, fmt.Errorf("vdso: %w", err)
	}
	return n, nil
}

// MinAddr is vm.mmap_min_addr, the lowest address a mapping may have.
func MinAddr() uint64 {
	b, err := os.ReadFile("/proc/sys/vm/mmap_min_addr")
	if err != nil {
		return 0x10000
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n == 0 {
		return pageSize
	}
	return (n + pageSize - 1) &^ (pageSize - 1)
}
