package tinyelf

import (
	"encoding/binary"
	"fmt"
)

// Reg is a general-purpose register in the numbering of the instruction
// encoding.
type Reg byte

// The registers the generated programs use: the system call number and
// return value (RAX) and the six argument registers.
const (
	RAX Reg = 0
	RDX Reg = 2
	RSI Reg = 6
	RDI Reg = 7
	R8  Reg = 8
	R10 Reg = 10
)

// Asm assembles a short program: instructions and data in the order they
// are added, with jumps and address loads that name a label instead of an
// offset. The zero value is ready to use.
type Asm struct {
	code   []byte
	labels map[string]int
	refs   []labelRef
	err    error
}

// labelRef is a 32-bit displacement field at offset at, to be filled with
// the distance from the end of the field to label.
type labelRef struct {
	at, size int
	label    string
}

// Emit appends raw bytes.
func (a *Asm) Emit(b ...byte) { a.code = append(a.code, b...) }

// Label names the current position.
func (a *Asm) Label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	if _, dup := a.labels[name]; dup && a.err == nil {
		a.err = fmt.Errorf("label %q defined twice", name)
	}
	a.labels[name] = len(a.code)
}

// Data places b at the current position under label: a string the program
// passes to the kernel, say. Data goes after the last instruction.
func (a *Asm) Data(label string, b []byte) {
	a.Label(label)
	a.Emit(b...)
}

func (a *Asm) ref(label string, size int) {
	a.refs = append(a.refs, labelRef{at: len(a.code), size: size, label: label})
	a.Emit(make([]byte, size)...)
}

// MovImm sets the 32-bit register r to v (which zero-extends into the
// whole register).
func (a *Asm) MovImm(r Reg, v uint32) {
	if r >= 8 {
		a.Emit(0x41) // REX.B
	}
	a.Emit(0xb8 + byte(r&7))
	a.Emit(binary.LittleEndian.AppendUint32(nil, v)...)
}

// LeaRIP loads the address of label into the 64-bit register r (RDI, RSI
// or RDX).
func (a *Asm) LeaRIP(r Reg, label string) {
	a.Emit(0x48, 0x8d, 0x05|byte(r&7)<<3) // lea r64, [rip+disp32]
	a.ref(label, 4)
}

// Syscall makes the system call numbered nr with the arguments already in
// place; its result is in RAX.
func (a *Asm) Syscall(nr uint32) {
	a.MovImm(RAX, nr)
	a.Emit(0x0f, 0x05)
}

// TestEAX sets the flags from EAX: Js then branches on a negative (failed)
// system call, Jz on zero.
func (a *Asm) TestEAX() { a.Emit(0x85, 0xc0) }

// Js, Jz and Jmp jump to label when the sign flag is set, when the zero
// flag is set, and always. They take the 32-bit displacement forms, so that
// no program has to count how far its labels are.
func (a *Asm) Js(label string)  { a.Emit(0x0f, 0x88); a.ref(label, 4) }
func (a *Asm) Jz(label string)  { a.Emit(0x0f, 0x84); a.ref(label, 4) }
func (a *Asm) Jmp(label string) { a.Emit(0xe9); a.ref(label, 4) }

// Exit ends the process with status.
func (a *Asm) Exit(status uint32) {
	a.MovImm(RDI, status)
	a.Syscall(231) // exit_group
}

// Assemble resolves the labels and returns the machine code.
func (a *Asm) Assemble() ([]byte, error) {
	if a.err != nil {
		return nil, a.err
	}
	out := append([]byte(nil), a.code...)
	for _, r := range a.refs {
		to, ok := a.labels[r.label]
		if !ok {
			return nil, fmt.Errorf("undefined label %q", r.label)
		}
		binary.LittleEndian.PutUint32(out[r.at:], uint32(int32(to-(r.at+r.size))))
	}
	return out, nil
}

// MustAssemble is Assemble for programs fixed in the source: an error there
// is a bug in the program, found by its tests.
func (a *Asm) MustAssemble() []byte {
	b, err := a.Assemble()
	if err != nil {
		panic("tinyelf: " + err.Error())
	}
	return b
}
