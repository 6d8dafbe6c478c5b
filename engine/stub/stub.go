package stub

import "encoding/binary"

// Layout says where the parts of a generated stub are once it runs.
type Layout struct {
	Base        uint64 // first byte of the code page
	Entry       uint64 // the pause loop
	Gadget      uint64 // a `syscall` instruction followed by int3
	Scratch     uint64 // zeroed read-write scratch area
	ScratchSize uint64
	// End is the first byte past the area the stub reserves: code,
	// scratch and room for parking the vDSO during a restore.
	End uint64
}

const (
	pageSize   = 4096
	ehdrSize   = 64
	phdrSize   = 56
	codeOffset = 0x100

	// ParkSize is the room after the scratch area where the restorer parks
	// the kernel's special mappings (vvar, vvar_vclock, vdso) while it
	// rebuilds the address space.
	ParkSize = 64 * pageSize
)

// code is the stub's whole program:
//
//	entry:  mov eax, 34   ; pause
//	        syscall
//	        jmp entry
//	gadget: syscall
//	        int3
var code = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00,
	0x0f, 0x05,
	0xeb, 0xf7,
	0x0f, 0x05,
	0xcc,
}

const gadgetOffset = codeOffset + 9

// Code returns the bytes of the stub's code page, as loaded at base: a
// restorer copies them into an anonymous page so that nothing of the stub's
// executable file stays mapped (the kernel refuses to change /proc/pid/exe
// while the old executable is still mapped).
func Code() []byte {
	page := make([]byte, pageSize)
	copy(page[codeOffset:], code)
	return page
}

// Size is the length of the address range a stub with the given scratch
// size reserves, parking room included.
func Size(scratchSize uint64) uint64 {
	return pageSize + roundUp(scratchSize) + ParkSize
}

// Build returns an ELF64 x86-64 executable whose code page is loaded at base
// (page-aligned, at least mmap_min_addr) followed by scratchSize bytes of
// zeroed read-write memory.
func Build(base, scratchSize uint64) ([]byte, Layout) {
	scratchSize = roundUp(scratchSize)
	l := Layout{
		Base:        base,
		Entry:       base + codeOffset,
		Gadget:      base + gadgetOffset,
		Scratch:     base + pageSize,
		ScratchSize: scratchSize,
		End:         base + Size(scratchSize),
	}
	// The file is the code page plus one zero page backing the start of
	// the scratch segment; the rest of the segment is bss.
	f := make([]byte, 2*pageSize)
	le := binary.LittleEndian

	copy(f[0:], []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0})
	le.PutUint16(f[16:], 2)    // ET_EXEC
	le.PutUint16(f[18:], 0x3e) // EM_X86_64
	le.PutUint32(f[20:], 1)    // EV_CURRENT
	le.PutUint64(f[24:], l.Entry)
	le.PutUint64(f[32:], ehdrSize) // e_phoff
	le.PutUint64(f[40:], 0)        // e_shoff
	le.PutUint32(f[48:], 0)        // e_flags
	le.PutUint16(f[52:], ehdrSize)
	le.PutUint16(f[54:], phdrSize)
	le.PutUint16(f[56:], 2) // e_phnum
	le.PutUint16(f[58:], 64)
	le.PutUint16(f[60:], 0)
	le.PutUint16(f[62:], 0)

	putPhdr(f[ehdrSize:], 5, 0, base, codeOffset+uint64(len(code)), codeOffset+uint64(len(code)))
	putPhdr(f[ehdrSize+phdrSize:], 6, pageSize, l.Scratch, pageSize, scratchSize)
	copy(f[codeOffset:], code)
	return f, l
}

// putPhdr writes a PT_LOAD program header with flags (PF_R=4, PF_W=2, PF_X=1).
func putPhdr(b []byte, flags uint32, off, vaddr, filesz, memsz uint64) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], 1) // PT_LOAD
	le.PutUint32(b[4:], flags)
	le.PutUint64(b[8:], off)
	le.PutUint64(b[16:], vaddr)
	le.PutUint64(b[24:], vaddr)
	le.PutUint64(b[32:], filesz)
	le.PutUint64(b[40:], memsz)
	le.PutUint64(b[48:], pageSize)
}

func roundUp(n uint64) uint64 { return (n + pageSize - 1) &^ (pageSize - 1) }
