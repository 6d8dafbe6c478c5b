package inject

// SyscallInsn is the encoding of the `syscall` instruction, which injected
// calls are run at.
var SyscallInsn = []byte{0x0f, 0x05}

// BreakInsn is the breakpoint instruction (int3): a gadget of SyscallInsn
// followed by it stops the thread once the call returns.
var BreakInsn = []byte{0xcc}
