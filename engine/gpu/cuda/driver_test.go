package cuda

import (
	"testing"
	"unsafe"
)

// TestArgsLayout checks lockArgs and restoreArgs against
// CUcheckpointLockArgs and CUcheckpointRestoreArgs: 64 bytes each.
func TestArgsLayout(t *testing.T) {
	var a lockArgs
	if unsafe.Sizeof(a) != 64 || unsafe.Offsetof(a.TimeoutMs) != 0 {
		t.Errorf("lockArgs is %d bytes, timeout at %d; want 64 and 0", unsafe.Sizeof(a), unsafe.Offsetof(a.TimeoutMs))
	}
	var r restoreArgs
	if unsafe.Sizeof(r) != 64 || unsafe.Offsetof(r.Count) != 8 || unsafe.Sizeof(gpuPair{}) != 32 {
		t.Errorf("restoreArgs is %d bytes, count at %d, a pair %d bytes; want 64, 8 and 32", unsafe.Sizeof(r), unsafe.Offsetof(r.Count), unsafe.Sizeof(gpuPair{}))
	}
}
