// Package ptrace owns every ptrace request the engine makes: seizing and
// interrupting threads, reading and writing registers and the extended FPU
// state, and running system calls inside a stopped thread (injection).
//
// The kernel binds a tracee to the thread that attached it, so a Tracer is
// pinned to one OS thread (runtime.LockOSThread) and every method must be
// called from the goroutine that created it. Nothing else in the engine
// calls ptrace directly.
package ptrace
