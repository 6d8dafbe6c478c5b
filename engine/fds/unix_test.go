package fds

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// TestUnixRoundTrip restores a connected stream pair and a datagram pair,
// both within the child, with the data queued on each, and refuses a
// socket whose peer is outside the job.
func TestUnixRoundTrip(t *testing.T) {
	var files []*os.File
	for _, tt := range []struct {
		typ  int
		data []string
	}{{unix.SOCK_STREAM, []string{"stream data"}}, {unix.SOCK_DGRAM, []string{"one", "two"}}} {
		p, err := unix.Socketpair(unix.AF_UNIX, tt.typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range tt.data {
			if _, err := unix.Write(p[0], []byte(d)); err != nil {
				t.Fatal(err)
			}
		}
		a, b := os.NewFile(uintptr(p[0]), "a"), os.NewFile(uintptr(p[1]), "b")
		defer a.Close()
		defer b.Close()
		files = append(files, a, b)
	}
	tp := roundTrip(t, files...)
	for _, f := range tp.before {
		if f.Kind != image.FDUnix {
			t.Fatalf("fd %d dumped as %s, want unix", f.Num, f.Kind)
		}
	}
	if q := tp.before[3].Unix.Queue; len(q) != 2 {
		t.Errorf("datagram receiver dumped with %d queued messages, want 2: %+v", len(q), q)
	}
	tp.same(t)
	for i := 0; i < 4; i += 2 {
		if a, b := tp.after[i].Unix, tp.after[i+1].Unix; a.PeerInode != b.Inode || b.PeerInode != a.Inode {
			t.Errorf("fds %d and %d restored unconnected: %+v %+v", tp.after[i].Num, tp.after[i+1].Num, a, b)
		}
	}
}

// TestUnixPeerOutsideRefused checks that a socket connected to one the
// job does not hold fails the checkpoint, naming it.
func TestUnixPeerOutsideRefused(t *testing.T) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, outside := os.NewFile(uintptr(p[0]), "mine"), os.NewFile(uintptr(p[1]), "outside")
	defer mine.Close()
	defer outside.Close()
	d := NewDumper(DumpOptions{Writer: newWriter(t)})
	defer d.Close()
	img := &image.Process{PID: 2}
	img.Files = []image.FD{{Num: 3, Kind: image.FDUnix, Unix: &image.UnixSocket{Inode: 1, PeerInode: 2}}}
	if err := d.CheckPeers([]*image.Process{img}); err == nil {
		t.Fatal("a socket connected outside the job passed")
	}
}
