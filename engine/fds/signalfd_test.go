package fds

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSignalfdRoundTrip restores a non-blocking signalfd with its mask.
func TestSignalfdRoundTrip(t *testing.T) {
	var set unix.Sigset_t
	set.Val[0] = 1<<(unix.SIGUSR1-1) | 1<<(34+2-1)
	fd, err := unix.Signalfd(-1, &set, unix.SFD_CLOEXEC|unix.SFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "signalfd")
	defer f.Close()
	tp := roundTrip(t, f)
	if s := tp.before[0].Anon.Signalfd; s == nil || s.Mask != set.Val[0] {
		t.Fatalf("signalfd dumped as %+v, want mask %#x", tp.before[0].Anon, set.Val[0])
	}
	tp.same(t)
}
