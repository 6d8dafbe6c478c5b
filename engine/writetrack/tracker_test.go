package writetrack

import (
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

func TestUnchanged(t *testing.T) {
	const present, excl = proc.PagePresent, proc.PageExclusive
	for _, tt := range []struct {
		name string
		m    Method
		e    uint64
		want bool
	}{
		{"soft-dirty clear", SoftDirty, present | excl, true},
		{"soft-dirty set", SoftDirty, present | excl | proc.PageSoftDirty, false},
		{"soft-dirty clear, shared with a child", SoftDirty, present, false},
		{"soft-dirty clear, swapped", SoftDirty, proc.PageSwapped | excl, false},
		{"protected", UffdWP, present | excl | proc.PageUffdWP, true},
		{"protection dropped by a write", UffdWP, present | excl, false},
		{"protected, shared", UffdWP, present | proc.PageUffdWP, false},
		{"protected, not present", UffdWP, excl | proc.PageUffdWP, false},
		{"no tracking", None, present | excl, false},
	} {
		if got := tt.m.Unchanged(tt.e); got != tt.want {
			t.Errorf("%s: Unchanged(%#x) = %v, want %v", tt.name, tt.e, got, tt.want)
		}
	}
}

// TestUffdWP arms this process's own pages with a userfaultfd, writes some
// of them and checks that exactly those read as written, then arms again.
func TestUffdWP(t *testing.T) {
	if !kernel.Has(kernel.UserfaultfdWPAsync) {
		t.Skipf("no userfaultfd write-protection: %s", kernel.Current().Why(kernel.UserfaultfdWPAsync))
	}
	const pages = 64
	mem, err := unix.Mmap(-1, 0, pages*os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range pages {
		mem[i*os.Getpagesize()] = 1
	}
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|UserModeOnly, 0, 0)
	if e != 0 {
		t.Fatalf("userfaultfd: %v", e)
	}
	tr := NewTracker(UffdWP)
	defer tr.Close()
	self := os.Getpid()
	if !tr.NeedsFD(self) {
		t.Fatal("a process without a userfaultfd does not need one")
	}
	if err := tr.Adopt(self, int(fd)); err != nil {
		t.Fatal(err)
	}
	start := uint64(uintptr(unsafe.Pointer(&mem[0])))
	r := []Range{{start, start + uint64(len(mem))}}
	written := map[int]bool{3: true, 10: true, 63: true}
	check := func(want map[int]bool) {
		t.Helper()
		pm, err := proc.OpenPagemap(self)
		if err != nil {
			t.Fatal(err)
		}
		defer pm.Close()
		entries, err := pm.Read(r[0].Start, r[0].End, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			if UffdWP.Unchanged(e) == want[i] {
				t.Errorf("page %d: unchanged %v, written %v", i, UffdWP.Unchanged(e), want[i])
			}
		}
	}
	if err := tr.Arm(self, r, r); err != nil {
		t.Fatal(err)
	}
	for i := range written {
		mem[i*os.Getpagesize()+5] = 7
	}
	check(written)
	// Protecting some written pages again leaves the others written and
	// the unwritten ones protected from before.
	page := func(i int) Range {
		a := start + uint64(i*os.Getpagesize())
		return Range{a, a + uint64(os.Getpagesize())}
	}
	if err := tr.Arm(self, r, []Range{page(3), page(10)}); err != nil {
		t.Fatal(err)
	}
	check(map[int]bool{63: true})
	mem[5*os.Getpagesize()] = 9
	check(map[int]bool{5: true, 63: true})
	if err := tr.Arm(self, r, r); err != nil {
		t.Fatal(err)
	}
	check(nil)
	// A range that is not mapped fails to arm, and says so.
	if err := tr.Arm(self, []Range{{0x10000, 0x20000}}, []Range{{0x10000, 0x20000}}); err == nil {
		t.Error("an unmapped range armed without error")
	}
}
