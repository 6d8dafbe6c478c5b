package fds

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
)

func TestParseInotifyInfo(t *testing.T) {
	info := []string{
		"inotify wd:2 ino:263 sdev:fe00000 mask:80000002 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:6302000000000000",
		"inotify wd:1 ino:3c4a3 sdev:800001 mask:300 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000",
		"pos: 0",
	}
	got, err := parseInotifyInfo(info)
	if err != nil {
		t.Fatal(err)
	}
	want := []image.InotifyWatch{
		{WD: 1, Ino: 0x3c4a3, Dev: unix.Mkdev(8, 1), Mask: 0x300, HandleType: 1, Handle: []byte{0xa3, 0xc4, 3, 0, 0, 0, 0, 0}},
		{WD: 2, Ino: 0x263, Dev: unix.Mkdev(254, 0), Mask: 0x80000002, HandleType: 1, Handle: []byte{0x63, 2, 0, 0, 0, 0, 0, 0}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"inotify wd:1 ino:zz sdev:0 mask:1", "inotify wd:1 ino:1 mask:1", "inotify wd:1 ino:1 sdev:0 mask:1 f_handle:xyz"} {
		if _, err := parseInotifyInfo([]string{bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestInotifyRoundTrip restores an inotify instance whose watch numbers
// have a gap (a removed watch), under the same numbers, with no events
// left queued by the restore; a watch number that cannot be had again
// fails, naming it.
func TestInotifyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(in), "inotify")
	defer f.Close()
	for i, name := range []string{"a", "b", "sub/c"} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		wd, err := unix.InotifyAddWatch(in, p, unix.IN_MODIFY|unix.IN_CLOSE_WRITE)
		if err != nil || wd != i+1 {
			t.Fatalf("watch %s: wd %d, %v", p, wd, err)
		}
	}
	if _, err := unix.InotifyRmWatch(in, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(in, dir, unix.IN_CREATE|unix.IN_ONESHOT); err != nil {
		t.Fatal(err)
	}
	tp := roundTrip(t, f)
	w := tp.before[0].Anon.Inotify
	if len(w) != 3 || w[0].WD != 1 || w[1].WD != 3 || w[2].WD != 4 || w[1].Path != filepath.Join(dir, "sub/c") || w[2].Path != dir {
		t.Fatalf("inotify watches %+v", w)
	}
	if fmt.Sprint(tp.after[0].Anon.Inotify) != fmt.Sprint(w) {
		t.Errorf("inotify: restored %+v, want %+v", tp.after[0].Anon.Inotify, w)
	}
	if n, err := readFromTracee(t, tp.b, tp.after[0].Num, make([]byte, 4096)); err != nil || n > 0 {
		t.Errorf("inotify: %d bytes of events queued after the restore (%v)", n, err)
	}

	c := &restoreCtx{p: tp.b.Proc, img: &image.Process{PID: tp.b.PID}}
	twice := []image.InotifyWatch{{WD: 1, Path: dir, Mask: unix.IN_CREATE}, {WD: 2, Path: dir, Mask: unix.IN_CREATE}}
	if _, err := c.createInotify(twice, false); err == nil || !strings.Contains(err.Error(), "watch 2") {
		t.Errorf("the same path watched twice: %v, want an error naming watch 2", err)
	}
}

// readFromTracee reads fd of the tracee without blocking (the fd is
// non-blocking or has data) and returns the byte count or 0 on EAGAIN.
func readFromTracee(t *testing.T, c *injecttest.Tracee, fd int, buf []byte) (int, error) {
	t.Helper()
	local, err := getFD(c.Proc, uint64(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	unix.SetNonblock(int(local.Fd()), true)
	n, err := unix.Read(int(local.Fd()), buf)
	if errors.Is(err, unix.EAGAIN) {
		return 0, nil
	}
	return n, err
}

func TestInotifySearch(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("reads /proc of the test process as root")
	}
	dir := t.TempDir()
	deep := filepath.Join(dir, "x", "y")
	os.MkdirAll(deep, 0o755)
	var st unix.Stat_t
	if err := unix.Stat(deep, &st); err != nil {
		t.Fatal(err)
	}
	if p, ok := searchInode(dir, st.Dev, st.Ino, 2); !ok || p != deep {
		t.Errorf("searchInode depth 2: %q %v, want %s", p, ok, deep)
	}
	if _, ok := searchInode(dir, st.Dev, st.Ino, 1); ok {
		t.Error("searchInode depth 1 found an inode two levels down")
	}
	// Without a usable handle, the search of the cwd and open files' dirs
	// runs; an inode beyond reach is named in the error.
	w := image.InotifyWatch{WD: 1, Dev: st.Dev, Ino: st.Ino + 1<<40}
	if _, err := inotifyPath(os.Getpid(), &w); err == nil || !strings.Contains(err.Error(), fmt.Sprint(w.Ino)) {
		t.Errorf("unreachable inode: %v, want an error naming inode %d", err, w.Ino)
	}
	f, err := os.Open(filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w = image.InotifyWatch{WD: 1, Dev: st.Dev, Ino: st.Ino}
	if p, err := inotifyPath(os.Getpid(), &w); err != nil || p != deep {
		t.Errorf("inode below an open directory: %q, %v; want %s", p, err, deep)
	}
}

func TestMountOfDev(t *testing.T) {
	dir := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	mnt, err := mountOfDev(os.Getpid(), st.Dev)
	if err != nil {
		t.Fatal(err)
	}
	var got unix.Stat_t
	if err := unix.Stat(mnt, &got); err != nil || got.Dev != st.Dev {
		t.Errorf("mountOfDev = %q (dev %#x, %v), want a mount point of dev %#x", mnt, got.Dev, err, st.Dev)
	}
	if _, err := mountOfDev(os.Getpid(), unix.Mkdev(4095, 1048575)); err == nil {
		t.Error("a device nothing mounts was found")
	}
}
