package tinyelf

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuild(t *testing.T) {
	tests := []struct {
		name string
		code []byte
	}{
		{"pause loop", []byte{0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7}},
		{"one byte", []byte{0xcc}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Build(tt.code)
			f, err := elf.NewFile(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("not an ELF file: %v", err)
			}
			if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
				t.Errorf("class %v machine %v type %v", f.Class, f.Machine, f.Type)
			}
			if len(f.Progs) != 1 || f.Progs[0].Type != elf.PT_LOAD || f.Progs[0].Flags != elf.PF_R|elf.PF_X {
				t.Fatalf("program headers %+v, want one R+X PT_LOAD", f.Progs)
			}
			p := f.Progs[0]
			if p.Vaddr != Base || p.Filesz != uint64(len(b)) {
				t.Errorf("segment at %#x size %d, want %#x size %d", p.Vaddr, p.Filesz, Base, len(b))
			}
			off := f.Entry - p.Vaddr
			if !bytes.Equal(b[off:], tt.code) {
				t.Errorf("entry does not point at the code")
			}
		})
	}
}

// TestAsmPrograms assembles small programs, runs them and checks their
// exit status: labels forward and backward, data addressed through RIP.
func TestAsmPrograms(t *testing.T) {
	tests := []struct {
		name   string
		build  func(a *Asm)
		status int
		stdout string
	}{
		{"exit", func(a *Asm) { a.Exit(7) }, 7, ""},
		{"forward jump", func(a *Asm) {
			a.Jmp("end")
			a.Exit(1)
			a.Label("end")
			a.Exit(3)
		}, 3, ""},
		{"failed call branches", func(a *Asm) {
			a.MovImm(RDI, 1<<30) // close of a descriptor nobody has: EBADF
			a.Syscall(3)
			a.TestEAX()
			a.Js("failed")
			a.Exit(0)
			a.Label("failed")
			a.Exit(9)
		}, 9, ""},
		{"data through rip", func(a *Asm) {
			a.MovImm(RDI, 1)
			a.LeaRIP(RSI, "msg")
			a.MovImm(RDX, 6)
			a.Syscall(1) // write
			a.Exit(0)
			a.Data("msg", []byte("hello\n"))
		}, 0, "hello\n"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a Asm
			tt.build(&a)
			code, err := a.Assemble()
			if err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(bin, Build(code), 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin).Output()
			status := 0
			if ee, ok := err.(*exec.ExitError); ok {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tt.status || string(out) != tt.stdout {
				t.Errorf("exit %d, output %q; want %d, %q", status, out, tt.status, tt.stdout)
			}
		})
	}
}

func TestAsmErrors(t *testing.T) {
	var undefined Asm
	undefined.Jmp("nowhere")
	if _, err := undefined.Assemble(); err == nil || !strings.Contains(err.Error(), "undefined label") {
		t.Errorf("undefined label: err = %v", err)
	}
	var twice Asm
	twice.Label("x")
	twice.Label("x")
	if _, err := twice.Assemble(); err == nil {
		t.Errorf("a label defined twice assembled")
	}
}
