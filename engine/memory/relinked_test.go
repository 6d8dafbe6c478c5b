package memory

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// TestRelinkedSharedMapping maps a file in /dev/shm the way glibc's
// sem_open makes a named semaphore (a temporary name, mapped, linked to
// its own name, the temporary one removed): the mapping is recorded as a
// file mapping of its own name, not as memory nothing could open again.
func TestRelinkedSharedMapping(t *testing.T) {
	var fs unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Skip("/dev/shm is not a tmpfs here")
	}
	tmp := fmt.Sprintf("/dev/shm/sem.tmp-%d", os.Getpid())
	name := fmt.Sprintf("/dev/shm/sem.relinked-test-%d", os.Getpid())
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(name)
	defer os.Remove(tmp)
	if err := f.Truncate(image.PageSize); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, image.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	mem[0] = 1
	if err := os.Link(tmp, name); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	maps, err := proc.ReadSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for i := range maps {
		m := &maps[i]
		if !strings.HasPrefix(m.Path, tmp) {
			continue
		}
		v, err := classifyVMA(os.Getpid(), m)
		if err != nil {
			t.Fatal(err)
		}
		if v.Kind != image.VMAFileShared || v.File == nil || v.File.Path != filepath.Clean(name) {
			t.Fatalf("mapping of %q: kind %s, file %+v; want a shared mapping of %s", m.Path, v.Kind, v.File, name)
		}
		return
	}
	t.Fatalf("no mapping of %s in this process's smaps", tmp)
}
