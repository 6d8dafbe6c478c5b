package cuda

import (
	"testing"
	"unsafe"
)

// TestLockArgsLayout checks lockArgs against CUcheckpointLockArgs: 64
// bytes, the timeout first.
func TestLockArgsLayout(t *testing.T) {
	var a lockArgs
	if unsafe.Sizeof(a) != 64 || unsafe.Offsetof(a.TimeoutMs) != 0 {
		t.Errorf("lockArgs is %d bytes, timeout at %d; want 64 and 0", unsafe.Sizeof(a), unsafe.Offsetof(a.TimeoutMs))
	}
}
