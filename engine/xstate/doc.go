// Package xstate moves a thread's extended register state (the XSAVE area
// that PTRACE_GETREGSET NT_X86_XSTATE returns) between CPUs whose areas
// are laid out differently.
//
// The standard XSAVE format puts each state component at an offset the CPU
// enumerates in CPUID leaf 0xD, and the kernel accepts only an area of its
// own size. A job checkpointed on one CPU model and restarted on another
// (a requeue onto another node) therefore needs its areas rewritten: the
// legacy region and the header stay where they are, every component the
// thread had in use moves to this CPU's offset.
package xstate
