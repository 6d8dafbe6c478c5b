package fds

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

func TestContentsOf(t *testing.T) {
	tests := []struct {
		target, name string
		kind         image.FDKind
		ok           bool
	}{
		{"/memfd:hello world (deleted)", "hello world", image.FDMemfd, true},
		{"/memfd: (deleted)", "", image.FDMemfd, true},
		{"/tmp/gone (deleted)", "/tmp/gone", image.FDDeleted, true},
		{"/tmp/here", "", "", false},
		{"anon_inode:[timerfd]", "", "", false},
		{"pipe:[12] (deleted)", "", "", false},
	}
	for _, tt := range tests {
		kind, name, ok := contentsOf(tt.target)
		if kind != tt.kind || name != tt.name || ok != tt.ok {
			t.Errorf("contentsOf(%q) = %q, %q, %v; want %q, %q, %v", tt.target, kind, name, ok, tt.kind, tt.name, tt.ok)
		}
	}
}

func TestDataExtents(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const mb = 1 << 20
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("middle"), 4*mb)
	f.Truncate(16 * mb)
	got, err := dataExtents(f, 16*mb)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Off != 0 || got[1].Off > 4*mb || got[1].Off+got[1].Len < 4*mb+6 || got[1].Off+got[1].Len > 5*mb {
		t.Fatalf("extents %+v, want one at 0 and one around 4 MiB, the 11 MiB hole left out", got)
	}
}

// TestContentsRoundTrip gives a child a sealed sparse memfd and a
// write-only deleted file, saves their contents, and re-creates both in a
// second child as memfds with the same data, seals, mode, flags and offset.
func TestContentsRoundTrip(t *testing.T) {
	mfd, err := unix.MemfdCreate("test data", unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mem := os.NewFile(uintptr(mfd), "memfd")
	defer mem.Close()
	mem.WriteAt([]byte("memfd head"), 0)
	mem.WriteAt([]byte("memfd tail"), 3<<20)
	mem.Seek(5, 0)
	mem.Chmod(0o640)
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "log")
	del, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer del.Close()
	del.WriteString("written before the file was deleted\n")
	os.Remove(path)

	w := newWriter(t)
	if err := dumpFileContents(os.Getpid(), &proc.FD{Num: 0, Target: "/dev/null"}, &image.FD{}, w); !errors.Is(err, ErrNoContents) {
		t.Errorf("/dev/null: %v, want ErrNoContents", err)
	}
	tp := roundTrip(t, mem, del)
	if c := tp.before[0].Contents; tp.before[0].Kind != image.FDMemfd || c.Name != "test data" || c.Seals != unix.F_SEAL_SHRINK|unix.F_SEAL_GROW ||
		c.Size != 3<<20+10 || c.Mode != 0o640 || len(c.Extents) != 2 {
		t.Fatalf("memfd recorded as %s %+v", tp.before[0].Kind, c)
	}
	if c := tp.before[1].Contents; tp.before[1].Kind != image.FDDeleted || c.Name != path || c.Seals != 0 {
		t.Fatalf("deleted file recorded as %s %+v", tp.before[1].Kind, c)
	}
	for i, f := range tp.before {
		got := tp.after[i]
		// Both come back as memfds, the deleted file under its path.
		if got.Kind != image.FDMemfd || got.Contents.Name != f.Contents.Name || got.Pos != f.Pos || got.Flags != f.Flags {
			t.Errorf("fd %d: restored as %s %q pos %d flags %#o, want memfd %q pos %d flags %#o",
				f.Num, got.Kind, got.Contents.Name, got.Pos, got.Flags, f.Contents.Name, f.Pos, f.Flags)
		}
		orig, err := os.ReadFile(fmt.Sprintf("/proc/%d/fd/%d", tp.a.PID, f.Num))
		if err != nil {
			t.Fatal(err)
		}
		back, err := os.Open(fmt.Sprintf("/proc/%d/fd/%d", tp.b.PID, f.Num))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(back.Name())
		seals, _ := unix.FcntlInt(back.Fd(), unix.F_GET_SEALS, 0)
		st, _ := back.Stat()
		back.Close()
		if !bytes.Equal(data, orig) {
			t.Errorf("fd %d: %d bytes restored, differing from the %d saved", f.Num, len(data), len(orig))
		}
		if i == 0 && (seals != f.Contents.Seals || st.Mode().Perm() != 0o640) {
			t.Errorf("memfd: seals %#x mode %v, want %#x and 0640", seals, st.Mode().Perm(), f.Contents.Seals)
		}
	}
}
