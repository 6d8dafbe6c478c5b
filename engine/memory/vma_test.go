package memory

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

func TestDumpPage(t *testing.T) {
	tests := []struct {
		kind image.VMAKind
		e    uint64
		want bool
	}{
		{image.VMAAnon, proc.PagePresent, true},
		{image.VMAAnon, proc.PageSwapped, true},
		{image.VMAAnon, 0, false},
		{image.VMAAnon, proc.PageSwapped | proc.PageGuardRegion, false},
		{image.VMAFilePrivate, proc.PagePresent | proc.PageFileShared, false},
		{image.VMAFilePrivate, proc.PagePresent, true},
		{image.VMAFilePrivate, proc.PageSwapped, true},
		{image.VMAFileShared, proc.PagePresent, false},
		{image.VMAAnonShared, 0, true},
		{image.VMAVDSO, proc.PagePresent, false},
	}
	for _, tt := range tests {
		if got := dumpPage(tt.kind, tt.e); got != tt.want {
			t.Errorf("dumpPage(%s, %#x) = %v, want %v", tt.kind, tt.e, got, tt.want)
		}
	}
}

func TestClassifyVMA(t *testing.T) {
	tests := []struct {
		path, perms string
		want        image.VMAKind
		err         string
	}{
		{"", "rw-p", image.VMAAnon, ""},
		{"[heap]", "rw-p", image.VMAAnon, ""},
		{"[stack]", "rw-p", image.VMAAnon, ""},
		{"", "rw-s", image.VMAAnonShared, ""},
		{"/dev/zero (deleted)", "rw-s", image.VMAAnonShared, ""},
		{"[vdso]", "r-xp", image.VMAVDSO, ""},
		{"[vvar]", "r--p", image.VMAVVar, ""},
		{"[vvar_vclock]", "r--p", image.VMAVVarVClock, ""},
		{"/bin/sh", "r-xp", image.VMAFilePrivate, ""},
		{"/bin/sh", "r--s", image.VMAFileShared, ""},
		{"/memfd:x (deleted)", "rw-s", image.VMAAnonShared, ""},
		{"/memfd:x (deleted)", "r--p", image.VMAFileGone, ""},
		{"/SYSV00000000 (deleted)", "rw-s", image.VMASysVShm, ""},
		{"/tmp/gone (deleted)", "rw-p", image.VMAFileGone, ""},
		{"/dev/shm/x (deleted)", "rw-s", image.VMAAnonShared, ""},
		{"/no/such/file", "r--p", "", "no such file"},
	}
	for _, tt := range tests {
		m := proc.Mapping{Start: 0x1000, End: 0x2000, Perms: tt.perms, Path: tt.path, VmFlags: []string{"rd", "gd", "hg"}}
		v, err := classifyVMA(42, &m)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "pid 42") {
				t.Errorf("%q: error %v, want one naming pid 42 and %q", tt.path, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.path, err)
			continue
		}
		if v.Kind != tt.want {
			t.Errorf("%q %s: kind %s, want %s", tt.path, tt.perms, v.Kind, tt.want)
		}
		if strings.Join(v.VmFlags, ",") != "gd,hg" {
			t.Errorf("%q: kept VmFlags %v, want gd,hg", tt.path, v.VmFlags)
		}
	}
	m := proc.Mapping{Start: 0x1000, End: 0x2000, Perms: "r-xp", Path: "[stack]", VmFlags: []string{"gd"}}
	v, _ := classifyVMA(1, &m)
	if v.Prot != unix.PROT_READ|unix.PROT_EXEC || mmapFlags(&v)&unix.MAP_GROWSDOWN == 0 {
		t.Errorf("prot %#x flags %#x: want r-x and MAP_GROWSDOWN", v.Prot, mmapFlags(&v))
	}
}

func TestVMAsWithPages(t *testing.T) {
	p := &image.Process{
		VMAs:     []image.VMA{{Start: 0x1000, End: 0x3000}, {Start: 0x3000, End: 0x5000}, {Start: 0x8000, End: 0x9000}},
		PageRuns: []image.PageRun{{Addr: 0x1000, Pages: 1}, {Addr: 0x8000, Pages: 1}},
	}
	got := vmasWithPages(p)
	if !got[0] || got[1] || !got[2] {
		t.Fatalf("vmasWithPages = %v, want [true false true]", got)
	}
}
