// Package engine is the shared checkpoint engine: it stops a job's
// processes, dumps their state into an image generation, and restores them
// into fresh stub processes by injected system calls.
//
// Each kind of kernel object has its own file with its dump and restore side
// by side: memory.go (VMAs and pages), threads.go (registers, xstate, masks,
// rseq, robust lists), files.go (file descriptors), signals.go (handlers and
// timers), task.go (ids, capabilities, limits, mm fields, cwd). checkpoint.go
// and restore.go drive them; seize.go stops the job; remote.go holds the
// injection helpers both directions share.
package engine
