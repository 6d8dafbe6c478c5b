package fds

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject/injecttest"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// trip is a descriptor table dumped from one traced child and restored
// into another.
type trip struct {
	a, b *injecttest.Tracee
	// before is a's table as dumped, after b's as dumped again once
	// restored; both only with the descriptors the test gave a.
	before, after []image.FD
	w             *image.Writer
}

// roundTrip gives a traced child files on fds 3, 4, ... (none where a
// file is nil), dumps its
// descriptor table with a Dumper, restores the table into a second child
// with a Restorer as a restart does into a stub, and dumps the second
// child's table again.
func roundTrip(t *testing.T, files ...*os.File) *trip {
	t.Helper()
	return roundTripAcross(t, nil, files...)
}

// roundTripAcross is roundTrip with between run after the dump and before
// the restore, where a restart finds the job gone.
func roundTripAcross(t *testing.T, between func(), files ...*os.File) *trip {
	t.Helper()
	tr := ptrace.NewTracer()
	t.Cleanup(tr.Close)
	// b gets nothing on the numbers a got files on (a nil file closes its
	// number in the child): not even a descriptor the test process
	// inherited without close-on-exec.
	tp := &trip{a: injecttest.Start(t, tr, files...), b: injecttest.Start(t, tr, make([]*os.File, len(files))...), w: newWriter(t)}
	img := &image.Process{PID: tp.a.PID, Cwd: "/"}
	d := NewDumper(DumpOptions{Writer: tp.w})
	defer d.Close()
	if err := d.Dump(tp.a.Proc, img); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if err := d.CheckPeers([]*image.Process{img}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	if between != nil {
		between()
	}
	jr, err := NewRestorer(&image.Generation{Dir: tp.w.Dir}, []*image.Process{img})
	if err != nil {
		t.Fatal(err)
	}
	if err := jr.Restore(tp.b.Proc, img); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := jr.Release(); err != nil {
		t.Fatalf("restore: %v", err)
	}
	again := &image.Process{PID: tp.b.PID}
	d2 := NewDumper(DumpOptions{Writer: tp.w})
	defer d2.Close()
	if err := d2.Dump(tp.b.Proc, again); err != nil {
		t.Fatalf("dump of the restored table: %v", err)
	}
	tp.before, tp.after = given(img.Files, len(files)), given(again.Files, len(files))
	gave := 0
	for _, f := range files {
		if f != nil {
			gave++
		}
	}
	if len(tp.before) != gave {
		t.Fatalf("dumped %d descriptors, gave the child %d: %+v", len(tp.before), gave, tp.before)
	}
	return tp
}

// given are the descriptors the test gave the child, on 3 to 3+n-1: the
// children also inherit whatever the test's own parent left open.
func given(fds []image.FD, n int) []image.FD {
	var out []image.FD
	for _, f := range fds {
		if f.Num > 2 && f.Num < 3+n {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Num < out[j].Num })
	return out
}

// identity clears what names a kernel object rather than describes it
// (inode numbers, data file names), which a restore cannot keep, and puts
// lists in one order.
func identity(f image.FD) image.FD {
	if f.Pipe != nil {
		p := *f.Pipe
		p.Inode = 0
		f.Pipe = &p
	}
	if f.Unix != nil {
		u := *f.Unix
		u.Inode, u.PeerInode = 0, 0
		f.Unix = &u
	}
	if f.Pty != nil {
		p := *f.Pty
		p.Index = 0 // the kernel's choice at restore
		f.Pty = &p
	}
	if len(f.Epoll) > 0 {
		// fdinfo lists the registrations in the kernel's tree order.
		e := append([]image.EpollEntry(nil), f.Epoll...)
		sort.Slice(e, func(i, j int) bool { return e[i].FD < e[j].FD })
		f.Epoll = e
	}
	if f.Contents != nil {
		c := *f.Contents
		c.Data, c.Shmem = "", ""
		f.Contents = &c
	}
	return f
}

// same checks that every descriptor came back as it was dumped.
func (tp *trip) same(t *testing.T) {
	t.Helper()
	if len(tp.after) != len(tp.before) {
		t.Fatalf("restored %d descriptors, dumped %d:\n%+v\n%+v", len(tp.after), len(tp.before), tp.after, tp.before)
	}
	for i := range tp.before {
		want, got := identity(tp.before[i]), identity(tp.after[i])
		if !reflect.DeepEqual(got, want) {
			t.Errorf("fd %d: restored as\n\t%s\nwant\n\t%s", want.Num, describe(got), describe(want))
		}
	}
}

func describe(f image.FD) string {
	s := fmt.Sprintf("%+v", f)
	for _, p := range []any{f.Pipe, f.Unix, f.Anon, f.Contents, f.File, f.Pty} {
		if !reflect.ValueOf(p).IsNil() {
			s += fmt.Sprintf(" %+v", p)
		}
	}
	return s
}

// newWriter starts a generation in a fresh store.
func newWriter(t *testing.T) *image.Writer {
	t.Helper()
	s, err := image.OpenStore(filepath.Join(t.TempDir(), "ckpt"), true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Abort)
	return w
}
