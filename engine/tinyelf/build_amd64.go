package tinyelf

import "encoding/binary"

// Base is the address programs are loaded at: the traditional start of a
// non-PIE x86-64 executable, far from anything the kernel places on its own.
const Base = 0x400000

// elfHeaderSize and phdrSize are the sizes of the ELF64 file header and of
// one program header; the code follows them directly.
const (
	elfHeaderSize = 64
	phdrSize      = 56
	// CodeOffset is where the code starts in the file, and so at Base+CodeOffset in memory.
	CodeOffset = elfHeaderSize + phdrSize
)

// Build wraps x86-64 machine code in a minimal static ELF64 executable: one
// read+execute PT_LOAD segment covering the whole file, entry point at the
// first byte of code. The code runs without libc, its stack set up by the
// kernel as for any static program ([rsp] argc, then argv, NULL, envp).
func Build(code []byte) []byte {
	size := uint64(CodeOffset + len(code))
	b := make([]byte, CodeOffset, size)
	le := binary.LittleEndian

	copy(b[0:], []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */})
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)    // EV_CURRENT
	le.PutUint64(b[24:], Base+CodeOffset)
	le.PutUint64(b[32:], elfHeaderSize) // e_phoff
	le.PutUint16(b[52:], elfHeaderSize) // e_ehsize
	le.PutUint16(b[54:], phdrSize)      // e_phentsize
	le.PutUint16(b[56:], 1)             // e_phnum

	p := b[elfHeaderSize:]
	le.PutUint32(p[0:], 1)       // PT_LOAD
	le.PutUint32(p[4:], 4|1)     // PF_R|PF_X
	le.PutUint64(p[8:], 0)       // p_offset
	le.PutUint64(p[16:], Base)   // p_vaddr
	le.PutUint64(p[24:], Base)   // p_paddr
	le.PutUint64(p[32:], size)   // p_filesz
	le.PutUint64(p[40:], size)   // p_memsz
	le.PutUint64(p[48:], 0x1000) // p_align
	return append(b, code...)
}
