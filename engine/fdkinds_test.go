package engine

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
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

func TestParseTimerfdInfo(t *testing.T) {
	good := []string{"clockid: 1", "ticks: 3", "settime flags: 03", "it_value: (4, 999640095)", "it_interval: (1, 5)"}
	got, err := parseTimerfdInfo(good)
	if err != nil {
		t.Fatal(err)
	}
	want := image.Timerfd{Clock: 1, Ticks: 3, SettimeFlags: 3, ValueSec: 4, ValueNsec: 999640095, IntervalSec: 1, IntervalNsec: 5}
	if *got != want {
		t.Fatalf("got %+v, want %+v", *got, want)
	}
	for _, bad := range [][]string{good[:4], {"clockid: x", "ticks: 0", "settime flags: 0", "it_value: (0, 0)", "it_interval: (0, 0)"},
		{"clockid: 1", "ticks: 0", "settime flags: 0", "it_value: 0 0", "it_interval: (0, 0)"}} {
		if _, err := parseTimerfdInfo(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

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

// fdOf finds fd num of pid with its fdinfo.
func fdOf(t *testing.T, pid, num int) *proc.FD {
	t.Helper()
	fds, err := proc.ReadFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	for i := range fds {
		if fds[i].Num == num {
			return &fds[i]
		}
	}
	t.Fatalf("pid %d has no fd %d", pid, num)
	return nil
}

// anonFDs creates a timerfd with unread expirations, an armed periodic
// timerfd, a signalfd and an inotify instance whose watch numbers have a
// gap, in the test process.
func anonFDs(t *testing.T, dir string) []*os.File {
	t.Helper()
	var files []*os.File
	add := func(fd int, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(fd), fmt.Sprint("fd ", fd)))
	}
	fired, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	add(fired, err)
	if err := unix.TimerfdSettime(fired, 0, &unix.ItimerSpec{Value: unix.Timespec{Nsec: 1}}, nil); err != nil {
		t.Fatal(err)
	}
	periodic, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	add(periodic, err)
	if err := unix.TimerfdSettime(periodic, 0, &unix.ItimerSpec{Value: unix.Timespec{Sec: 100}, Interval: unix.Timespec{Sec: 2, Nsec: 500}}, nil); err != nil {
		t.Fatal(err)
	}
	var set unix.Sigset_t
	set.Val[0] = 1<<(unix.SIGUSR1-1) | 1<<(sigRTMin+2-1)
	add(unix.Signalfd(-1, &set, unix.SFD_CLOEXEC|unix.SFD_NONBLOCK))
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	add(in, err)
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
	return files
}

// TestAnonFDRoundTrip hands a child timerfds, a signalfd and an inotify
// instance, records them from the child's fdinfo, re-creates them in a
// second child and compares that child's fdinfo.
func TestAnonFDRoundTrip(t *testing.T) {
	tr := ptrace.NewTracer()
	defer tr.Close()
	dir := t.TempDir()
	files := anonFDs(t, dir)
	a := injecttest.Start(t, tr, files...)
	var dumped []image.FD
	for i := range files {
		fd := fdOf(t, a.PID, 3+i)
		out := image.FD{Num: fd.Num, Flags: fd.Flags}
		if err := dumpAnonFD(a.PID, fd, &out); err != nil {
			t.Fatalf("fd %d: %v", fd.Num, err)
		}
		dumped = append(dumped, out)
	}
	if got := dumped[0].Anon.Timerfd.Ticks; got != 1 {
		t.Errorf("fired timerfd: %d ticks, want 1", got)
	}
	w := dumped[3].Anon.Inotify
	if len(w) != 3 || w[0].WD != 1 || w[1].WD != 3 || w[2].WD != 4 || w[1].Path != filepath.Join(dir, "sub/c") || w[2].Path != dir {
		t.Fatalf("inotify watches %+v", w)
	}

	b := injecttest.Start(t, tr)
	r := restorerFor(tr, b, &image.Process{PID: b.PID})
	for i, f := range dumped {
		fd, err := r.createAnonFD(&f)
		if err != nil {
			t.Fatalf("fd %d: %v", f.Num, err)
		}
		orig, got := fdOf(t, a.PID, f.Num), fdOf(t, b.PID, int(fd))
		if got.Target != orig.Target || got.Flags&^unix.O_CLOEXEC != orig.Flags&^unix.O_CLOEXEC {
			t.Errorf("fd %d: restored %s flags %#o, want %s flags %#o", f.Num, got.Target, got.Flags, orig.Target, orig.Flags)
		}
		again := image.FD{Num: got.Num, Flags: got.Flags}
		if err := dumpAnonFD(b.PID, got, &again); err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0, 1:
			want, have := *f.Anon.Timerfd, *again.Anon.Timerfd
			if have.ValueSec > want.ValueSec || want.ValueSec-have.ValueSec > 1 {
				t.Errorf("timerfd %d: %d s left after the restore, %d before", i, have.ValueSec, want.ValueSec)
			}
			want.ValueSec, want.ValueNsec, have.ValueSec, have.ValueNsec = 0, 0, 0, 0
			if have != want {
				t.Errorf("timerfd %d: restored %+v, want %+v", i, have, want)
			}
		case 2:
			if *again.Anon.Signalfd != *f.Anon.Signalfd {
				t.Errorf("signalfd: restored %+v, want %+v", *again.Anon.Signalfd, *f.Anon.Signalfd)
			}
		case 3:
			if fmt.Sprint(again.Anon.Inotify) != fmt.Sprint(f.Anon.Inotify) {
				t.Errorf("inotify: restored %+v, want %+v", again.Anon.Inotify, f.Anon.Inotify)
			}
			n, err := readFromTracee(t, b, int(fd), make([]byte, 4096))
			if err != nil || n > 0 {
				t.Errorf("inotify: %d bytes of events queued after the restore (%v)", n, err)
			}
		}
	}
	// A watch number that can no longer be had fails clearly.
	bad := dumped[3]
	bad.Anon = &image.AnonFD{Inotify: []image.InotifyWatch{{WD: 1, Path: dir, Mask: unix.IN_CREATE}, {WD: 2, Path: dir, Mask: unix.IN_CREATE}}}
	if _, err := r.createAnonFD(&bad); err == nil || !strings.Contains(err.Error(), "watch 2") {
		t.Errorf("the same path watched twice: %v, want an error naming watch 2", err)
	}
	if err := dumpAnonFD(a.PID, &proc.FD{Target: "anon_inode:[eventfd]"}, &image.FD{}); !errors.Is(err, ErrNotAnonFD) {
		t.Errorf("eventfd: %v, want ErrNotAnonFD", err)
	}
}

// readFromTracee reads fd of the tracee without blocking (the fd is
// non-blocking or has data) and returns the byte count or 0 on EAGAIN.
func readFromTracee(t *testing.T, c *injecttest.Tracee, fd int, buf []byte) (int, error) {
	t.Helper()
	local, err := (&restorer{Process: *c.Proc}).getFD(uint64(fd))
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
