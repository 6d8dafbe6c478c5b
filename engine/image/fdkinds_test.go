package image

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestKindName checks the kind of descriptors from images that recorded
// it and from older ones that did not.
func TestKindName(t *testing.T) {
	tests := []struct {
		fd   FD
		want FDKind
	}{
		{FD{Kind: FDEventfd}, FDEventfd},
		{FD{Anon: &AnonFD{Timerfd: &Timerfd{}}}, FDTimerfd},
		{FD{Anon: &AnonFD{Signalfd: &Signalfd{}}}, FDSignalfd},
		{FD{Anon: &AnonFD{}}, FDInotify},
		{FD{Contents: &FileContents{Name: "/tmp/gone"}}, FDDeleted},
		{FD{Contents: &FileContents{Name: "buffer"}}, FDMemfd},
		{FD{Unix: &UnixSocket{}}, FDUnix},
		{FD{Pipe: &Pipe{}}, FDPipe},
		{FD{}, "unknown"},
	}
	for _, tt := range tests {
		if got := tt.fd.KindName(); got != tt.want {
			t.Errorf("%+v: %s, want %s", tt.fd, got, tt.want)
		}
	}
}

func TestWritable(t *testing.T) {
	for flags, want := range map[int]bool{unix.O_RDONLY: false, unix.O_WRONLY | unix.O_APPEND: true, unix.O_RDWR: true} {
		if got := (&FD{Flags: flags}).Writable(); got != want {
			t.Errorf("flags %#o: writable %v, want %v", flags, got, want)
		}
	}
}
