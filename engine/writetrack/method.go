package writetrack

import (
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// Method is how writes are tracked.
type Method int

const (
	// None: every page is compared by content.
	None Method = iota
	// SoftDirty: clear_refs "4" and pagemap bit 55.
	SoftDirty
	// UffdWP: userfaultfd asynchronous write-protection and pagemap bit 57.
	UffdWP
)

// String says how pages were found unchanged, for the log.
func (m Method) String() string {
	switch m {
	case SoftDirty:
		return "soft-dirty bits"
	case UffdWP:
		return "userfaultfd write-protection"
	}
	return "content"
}

// Choose picks the method the kernel k has: soft-dirty bits, which need no
// state in the supervisor and follow a process across fork, else
// userfaultfd write-protection.
func Choose(k *kernel.Set) Method {
	switch {
	case k.Has(kernel.SoftDirty):
		return SoftDirty
	case k.Has(kernel.UserfaultfdWPAsync) && k.Has(kernel.PidfdGetfd):
		return UffdWP
	}
	return None
}

// Unchanged reports whether the page with pagemap entry e, in a private
// mapping of a process armed with m, was not written since.
func (m Method) Unchanged(e uint64) bool {
	if e&proc.PagePresent == 0 || e&proc.PageExclusive == 0 {
		return false
	}
	switch m {
	case SoftDirty:
		return e&proc.PageSoftDirty == 0
	case UffdWP:
		return e&proc.PageUffdWP != 0
	}
	return false
}
