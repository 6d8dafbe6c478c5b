package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fileid"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestLocalKind(t *testing.T) {
	tests := []struct {
		fsType    int64
		mountType string
		written   bool
		want      string
	}{
		{tmpfsMagic, "tmpfs", false, "tmpfs"},
		{ramfsMagic, "ramfs", true, "ramfs"},
		{0xef53, "ext4", true, "local disk"},
		{0xef53, "ext4", false, ""}, // a program or library, on every node
		{0x6969, "nfs4", true, ""},
		{0x0bd00bd0, "lustre", true, ""},
		{0x65735546, "fuse.sshfs", true, ""},
		{0x65735546, "", true, ""}, // a kernel that cannot name the mount
		{tmpfsMagic, "", false, "tmpfs"},
		{0xef53, "", true, "local disk"},
		// 9p and virtiofs pass the exporting file system's magic on.
		{0xef53, "9p", true, ""},
		{tmpfsMagic, "9p", true, ""},
		{0xef53, "virtiofs", true, ""},
	}
	for _, tt := range tests {
		if got := localKind(tt.fsType, tt.mountType, tt.written); got != tt.want {
			t.Errorf("localKind(%#x, %q, %v) = %q, want %q", tt.fsType, tt.mountType, tt.written, got, tt.want)
		}
	}
}

// TestSaveAndRecreateLocalFiles saves a /dev/shm file and a file written on
// the local disk, removes them as another node would not have them, and
// creates them again from the generation.
func TestSaveAndRecreateLocalFiles(t *testing.T) {
	var fs unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &fs); err != nil || fs.Type != tmpfsMagic {
		t.Skip("no tmpfs at /dev/shm")
	}
	shm := filepath.Join("/dev/shm", "ckpt-test-"+filepath.Base(t.TempDir()))
	t.Cleanup(func() { os.Remove(shm) })
	disk := filepath.Join(t.TempDir(), "out.log")
	ro := filepath.Join(t.TempDir(), "input.dat")
	contents := map[string][]byte{shm: bytes.Repeat([]byte("shm!"), 5000), disk: []byte("line 1\nline 2\n"), ro: []byte("input")}
	for p, b := range contents {
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(shm, old, old); err != nil {
		t.Fatal(err)
	}

	st, err := image.OpenStore(filepath.Join(t.TempDir(), "ckpt"), true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	m := &image.Manifest{}
	jd := newJobDump(CheckpointOptions{Writer: w, Manifest: m})
	ids := map[string]*image.FileID{}
	for _, p := range []string{shm, disk, ro} {
		if ids[p], err = fileid.Of(p); err != nil {
			t.Fatal(err)
		}
	}
	p := &image.Process{PID: 2,
		VMAs: []image.VMA{{Start: 0x10000, End: 0x20000, Kind: image.VMAFileShared, Prot: unix.PROT_READ | unix.PROT_WRITE, File: ids[shm]}},
		Files: []image.FD{
			{Num: 3, Kind: image.FDFile, Flags: unix.O_WRONLY | unix.O_APPEND, File: ids[disk]},
			{Num: 4, Kind: image.FDFile, Flags: unix.O_RDONLY, File: ids[ro]},
			{Num: 5, Kind: image.FDFile, Flags: unix.O_RDWR, File: ids[shm]}, // the same file again: saved once
		}}
	if err := jd.saveLocalFiles(os.Getpid(), p); err != nil {
		t.Fatal(err)
	}
	if len(m.LocalFiles) != 2 || m.LocalFiles[0].Where != "tmpfs" || m.LocalFiles[1].Where != "local disk" {
		t.Fatalf("saved %+v, want the tmpfs file and the written local one", m.LocalFiles)
	}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	gen, err := st.Open(w.Gen)
	if err != nil {
		t.Fatal(err)
	}

	os.Remove(shm)
	os.Remove(disk)
	if err := restoreLocalFiles(gen, "", logrus.New()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{shm, disk} {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, contents[p]) {
			t.Errorf("%s re-created with %d bytes (%v), want %d", p, len(b), err, len(contents[p]))
		}
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, %v; want 0640", p, fi.Mode(), err)
		}
	}
	if err := fileid.Check("", ids[shm]); err != nil {
		t.Errorf("the re-created file does not pass as the mapped one: %v", err)
	}

	// A file that is there is left alone.
	if err := os.WriteFile(disk, []byte("someone else's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := restoreLocalFiles(gen, "", logrus.New()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(disk); string(b) != "someone else's" {
		t.Errorf("an existing file was overwritten: %q", b)
	}
}

func TestSaveLocalFilesLimit(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.out")
	if err := os.WriteFile(big, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := image.OpenStore(filepath.Join(t.TempDir(), "ckpt"), true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	id, err := fileid.Of(big)
	if err != nil {
		t.Fatal(err)
	}
	jd := newJobDump(CheckpointOptions{Writer: w, Manifest: &image.Manifest{}, LocalLimit: 1000})
	p := &image.Process{PID: 2, Files: []image.FD{{Num: 7, Kind: image.FDFile, Flags: unix.O_WRONLY, File: id}}}
	err = jd.saveLocalFiles(os.Getpid(), p)
	if err == nil || !strings.Contains(err.Error(), "pid 2 fd 7") || !strings.Contains(err.Error(), big) ||
		!strings.Contains(err.Error(), "--local-limit") {
		t.Fatalf("err = %v, want the file named and --local-limit", err)
	}
}
