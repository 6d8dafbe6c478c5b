// Package stub generates the tiny static executable a restore starts in
// place of each process: a few instructions that loop on pause(2), a
// `syscall; int3` gadget for injection and a zeroed scratch area, loaded at an
// address the image does not use. The restorer morphs the stub into the
// checkpointed process by injected system calls alone; the stub uses no
// stack, no libc and no rseq, so nothing of it is left once it is unmapped.
package stub
