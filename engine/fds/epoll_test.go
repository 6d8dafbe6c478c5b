package fds

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

func TestEpollEntries(t *testing.T) {
	fd := proc.FD{Info: []string{
		"tfd:        5 events:       19 data:                5  pos:0 ino:3 sdev:f",
		"tfd:        7 events: 80000019 data:     7f00deadbeef  pos:0 ino:4 sdev:f",
	}}
	got, err := epollEntries(&fd)
	if err != nil {
		t.Fatal(err)
	}
	want := []image.EpollEntry{{FD: 5, Events: 0x19, Data: 5}, {FD: 7, Events: 0x80000019, Data: 0x7f00deadbeef}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := epollEntries(&proc.FD{Info: []string{"tfd: x events: 1 data: 1"}}); err == nil {
		t.Fatal("a malformed tfd must be an error")
	}
}

// TestEpollRoundTrip restores an epoll instance watching two descriptors
// of the same process, with their event masks and data.
func TestEpollRoundTrip(t *testing.T) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	epf := os.NewFile(uintptr(ep), "epoll")
	defer epf.Close()
	var files []*os.File
	for i := 0; i < 2; i++ {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "eventfd")
		defer f.Close()
		files = append(files, f)
	}
	// An epoll instance names the descriptors it watches by their numbers
	// in the process that registered them: the child gets the eventfds on
	// the numbers they have here, the epoll instance on 3.
	given := []*os.File{epf}
	for i, f := range files {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(f.Fd()), &unix.EpollEvent{Events: unix.EPOLLIN | uint32(i)<<31, Fd: int32(f.Fd()), Pad: 0x1234}); err != nil {
			t.Fatal(err)
		}
		for len(given) < int(f.Fd())-3 {
			given = append(given, nil)
		}
		given = append(given, f)
	}
	tp := roundTrip(t, given...)
	if len(tp.before[0].Epoll) != 2 {
		t.Fatalf("epoll dumped with %d entries, want 2: %+v", len(tp.before[0].Epoll), tp.before[0])
	}
	tp.same(t)
}
