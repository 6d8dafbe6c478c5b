package fds

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// TestEventfdRoundTrip restores eventfds with their counters, one in
// semaphore mode, one non-blocking.
func TestEventfdRoundTrip(t *testing.T) {
	var files []*os.File
	for _, tt := range []struct {
		count uint
		flags int
	}{{5, unix.EFD_CLOEXEC}, {3, unix.EFD_SEMAPHORE | unix.EFD_NONBLOCK | unix.EFD_CLOEXEC}} {
		fd, err := unix.Eventfd(tt.count, tt.flags)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "eventfd")
		defer f.Close()
		files = append(files, f)
	}
	tp := roundTrip(t, files...)
	if f := tp.before[1]; f.Kind != image.FDEventfd || f.EventfdCount != 3 || !f.EventfdSemaphore || f.Flags&unix.O_NONBLOCK == 0 {
		t.Fatalf("semaphore eventfd dumped as %+v", f)
	}
	tp.same(t)
}
