package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// TestAttachSysVShm attaches a restored segment the ways a process may
// have had it (whole, read-only, a part of it) in a stub in the job's
// namespaces, and checks that a dump would see the same mappings again.
func TestAttachSysVShm(t *testing.T) {
	const id, pages = 0, 4
	ns := newIPCNS(t)
	dir := t.TempDir()
	data := make([]byte, pages*pageSize)
	for p := range pages {
		copy(data[p*pageSize:], fmt.Sprintf("page %d", p))
	}
	if err := os.WriteFile(filepath.Join(dir, image.SysVShmName(id)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Getuid(), os.Getgid()
	ipc := &image.SysVIPC{Shm: []image.SysVShm{{
		SysVPerm: image.SysVPerm{ID: id, Key: 0x4444, UID: uid, GID: gid, CUID: uid, CGID: gid, Mode: 0o600},
		Size:     pages * pageSize,
		Data:     image.SysVShmName(id),
	}}}
	if err := restoreSysVIPC(ns.cmd.Process.Pid, ipc, &image.Generation{Dir: dir}); err != nil {
		t.Fatal(err)
	}

	tr := ptrace.NewTracer()
	defer tr.Close()
	h, err := startIPCHelper(tr, ns.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer h.stop()
	r := &memory.Restorer{P: &h.Process, Log: logrus.StandardLogger()}
	rw := unix.PROT_READ | unix.PROT_WRITE
	tests := []struct {
		name          string
		start, offset uint64
		pages         uint64
		prot          int
		readOnly      bool
	}{
		{"whole", 0x200000000, 0, pages, rw, false},
		{"read-only attach", 0x210000000, 0, pages, unix.PROT_READ, true},
		{"middle part", 0x220000000, pageSize, 2, rw, false},
		{"tail, write protected", 0x230000000, 3 * pageSize, 1, unix.PROT_READ, false},
	}
	for _, tt := range tests {
		v := image.VMA{Start: tt.start, End: tt.start + tt.pages*pageSize, Offset: tt.offset, Prot: tt.prot,
			Kind: image.VMASysVShm, Name: "/SYSV00004444 (deleted)", SysVShm: &image.SysVShmAttach{ID: id, ReadOnly: tt.readOnly}}
		if err := r.AttachSysVShm(&v); err != nil {
			t.Fatalf("%s: AttachSysVShm: %v", tt.name, err)
		}
		vmas, err := memory.ReadVMAs(h.PID)
		if err != nil {
			t.Fatalf("%s: ReadVMAs: %v", tt.name, err)
		}
		var got *image.VMA
		for i := range vmas {
			if vmas[i].Start == v.Start {
				got = &vmas[i]
			}
		}
		if got == nil {
			t.Fatalf("%s: nothing mapped at %#x", tt.name, v.Start)
		}
		if !reflect.DeepEqual(*got, v) {
			t.Errorf("%s: a dump would see %+v (segment %+v), want %+v (segment %+v)", tt.name, *got, got.SysVShm, v, v.SysVShm)
		}
		b := make([]byte, 8)
		if err := h.Read(v.Start, b); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("page %d\x00", tt.offset/pageSize); string(b[:len(want)]) != want {
			t.Errorf("%s: mapping starts with %q, want %q", tt.name, b, want)
		}
	}
	// All four show the same memory.
	if err := h.Write(0x200000000+3*pageSize, []byte("shared")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	if err := h.Read(0x230000000, b); err != nil {
		t.Fatal(err)
	}
	if string(b) != "shared" {
		t.Errorf("a write through one attachment reads %q through another", b)
	}
	// Nothing of the temporary attachments of the parts is left.
	maps, err := proc.ReadSmaps(h.PID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range maps {
		if memory.IsSysVShmPath(m.Path) {
			n++
		}
	}
	if n != len(tests) {
		t.Errorf("%d segment mappings in the stub, want %d", n, len(tests))
	}
}
