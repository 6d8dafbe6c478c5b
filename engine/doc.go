// Package engine is the shared checkpoint engine: it stops a job's
// processes, dumps their state into an image generation, and restores them
// into fresh stub processes by injected system calls.
//
// The two use cases are one file each: checkpoint.go (Checkpoint: the job,
// then process by process) and restore.go (Restore: the job's stubs, then
// each process in phases across the job, restorer.go being one process's
// part). seize.go stops the job; proctree.go holds processes with their
// pids, sessions and groups, both ways.
//
// Each kind of kernel object has its dump and restore side by side, in a
// package or a file of its own:
//
//	fds/          file descriptors, one file per kind (fds/doc.go: how to add one)
//	memory/       mappings, pages, shared memory, vDSO and vvar
//	threads.go    registers, XSAVE area, signal masks, rseq, robust lists
//	signals.go    handlers, interval timers, pending signals
//	posixtimers.go, rseq.go, sysvipc.go, task.go (ids, capabilities,
//	              limits, mm fields, cwd), localfiles.go (node-local files)
//	container.go  a container job: the runtime started again, the stub
//	              exec'd inside it (container_follow.go follows its tasks)
//
// Underneath: inject/ runs system calls in a stopped process and moves
// descriptors in and out of it; ptrace/ makes every ptrace request (nothing
// else calls unix.Ptrace*); abi/ lays out the kernel structures injected
// calls take; image/ reads and writes the image, every file through it;
// proc/ parses /proc; kernel/ probes what this kernel has; stub/ builds the
// restore stub; fileid/ tells whether a file is the one recorded; node/
// holds the error for a node the restore cannot use.
package engine
