package namespaces

import (
	"encoding/binary"
	"strconv"
)

// elfBase is the address the generated programs are loaded at. It is the
// traditional start of a non-PIE x86-64 executable and far from anything
// the kernel places on its own.
const elfBase = 0x400000

// elfHeaderSize and phdrSize are the sizes of the ELF64 file header and of
// one program header; the code follows them directly.
const (
	elfHeaderSize = 64
	phdrSize      = 56
	elfCodeOffset = elfHeaderSize + phdrSize
)

// BuildELF wraps x86-64 machine code in a minimal static ELF64 executable:
// one read+execute PT_LOAD segment covering the whole file, entry point at
// the first byte of code. The code runs without libc, stack set up by the
// kernel as for any static program.
func BuildELF(code []byte) []byte {
	size := uint64(elfCodeOffset + len(code))
	b := make([]byte, elfCodeOffset, size)
	le := binary.LittleEndian

	copy(b[0:], []byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */})
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)    // EV_CURRENT
	le.PutUint64(b[24:], elfBase+elfCodeOffset)
	le.PutUint64(b[32:], elfHeaderSize) // e_phoff
	le.PutUint16(b[52:], elfHeaderSize) // e_ehsize
	le.PutUint16(b[54:], phdrSize)      // e_phentsize
	le.PutUint16(b[56:], 1)             // e_phnum

	p := b[elfHeaderSize:]
	le.PutUint32(p[0:], 1)        // PT_LOAD
	le.PutUint32(p[4:], 4|1)      // PF_R|PF_X
	le.PutUint64(p[8:], 0)        // p_offset
	le.PutUint64(p[16:], elfBase) // p_vaddr
	le.PutUint64(p[24:], elfBase) // p_paddr
	le.PutUint64(p[32:], size)    // p_filesz
	le.PutUint64(p[40:], size)    // p_memsz
	le.PutUint64(p[48:], 0x1000)  // p_align
	return append(b, code...)
}

// Exit statuses of the pre-init program, read by Start when init dies before
// it reports ready.
const (
	preInitLastPIDFailed = 125
	preInitExecFailed    = 126
)

// preInitELF returns a static program that writes lastPID to
// /proc/sys/kernel/ns_last_pid (which acts on the writer's own PID
// namespace) and then executes argv[0] with its own argv and environment.
// It runs as PID 1 of a fresh PID namespace before the Go runtime of init
// starts any thread, so that those threads get PIDs after lastPID.
func preInitELF(lastPID int) []byte {
	path := []byte("/proc/sys/kernel/ns_last_pid\x00")
	num := []byte(strconv.Itoa(lastPID))

	var c []byte
	emit := func(bs ...byte) { c = append(c, bs...) }
	// Positions of rel32 fields to patch once the data offsets are known.
	var pathRel, numRel, failOpen, failWrite int

	emit(0xb8, 2, 0, 0, 0) // mov eax, SYS_open
	emit(0x48, 0x8d, 0x3d) // lea rdi, [rip+path]
	pathRel = len(c)
	emit(0, 0, 0, 0)
	emit(0xbe, 0x01, 0x00, 0x08, 0x00) // mov esi, O_WRONLY|O_CLOEXEC
	emit(0x0f, 0x05)                   // syscall
	emit(0x85, 0xc0)                   // test eax, eax
	emit(0x78, 0)                      // js failLastPID
	failOpen = len(c) - 1
	emit(0x89, 0xc7)       // mov edi, eax
	emit(0xb8, 1, 0, 0, 0) // mov eax, SYS_write
	emit(0x48, 0x8d, 0x35) // lea rsi, [rip+num]
	numRel = len(c)
	emit(0, 0, 0, 0)
	emit(0xba, byte(len(num)), 0, 0, 0) // mov edx, len(num)
	emit(0x0f, 0x05)                    // syscall
	emit(0x48, 0x85, 0xc0)              // test rax, rax
	emit(0x78, 0)                       // js failLastPID
	failWrite = len(c) - 1

	emit(0xb8, 59, 0, 0, 0)                // mov eax, SYS_execve
	emit(0x48, 0x8b, 0x7c, 0x24, 0x08)     // mov rdi, [rsp+8]       argv[0]
	emit(0x48, 0x8d, 0x74, 0x24, 0x08)     // lea rsi, [rsp+8]       argv
	emit(0x48, 0x8b, 0x14, 0x24)           // mov rdx, [rsp]         argc
	emit(0x48, 0x8d, 0x54, 0xd4, 0x10)     // lea rdx, [rsp+rdx*8+16] envp
	emit(0x0f, 0x05)                       // syscall
	emit(0xbf, preInitExecFailed, 0, 0, 0) // mov edi, 126
	emit(0xeb, 5)                          // jmp exit

	failLastPID := len(c)
	emit(0xbf, preInitLastPIDFailed, 0, 0, 0) // mov edi, 125
	emit(0xb8, 231, 0, 0, 0)                  // exit: mov eax, SYS_exit_group
	emit(0x0f, 0x05)                          // syscall

	c[failOpen] = byte(failLastPID - (failOpen + 1))
	c[failWrite] = byte(failLastPID - (failWrite + 1))
	pathAt := len(c)
	c = append(c, path...)
	numAt := len(c)
	c = append(c, num...)
	binary.LittleEndian.PutUint32(c[pathRel:], uint32(pathAt-(pathRel+4)))
	binary.LittleEndian.PutUint32(c[numRel:], uint32(numAt-(numRel+4)))
	return BuildELF(c)
}
