// Package tinyelf builds the few minimal static x86-64 programs the tool
// runs besides itself: the sandbox's pre-init, the program that puts a new
// task into the job's time namespace on kernels that refuse a vfork child
// there, and the kernel probes' test subjects.
//
// Each is a handful of instructions with no libc, no stack use beyond what
// the kernel sets up and no rseq, so it runs the same on every kernel the
// tool supports. Build wraps machine code in an ELF file; Asm assembles that
// code from the few instructions these programs use, with labels in place of
// hand-counted jump offsets.
package tinyelf
