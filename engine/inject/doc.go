// Package inject runs system calls inside a stopped process on the
// engine's behalf. A Process is a ptrace-stopped task with a scratch area
// in its own memory: arguments are written there with process_vm_writev,
// the call runs on a thread stopped at a `syscall` instruction, and its
// results are read back the same way.
//
// Descriptors move between the supervisor and such a process here too:
// PullFD copies one of the process's descriptors into the supervisor
// (pidfd_getfd, or SCM_RIGHTS sent by the process on kernels without it),
// PushFDs installs the supervisor's descriptors in the process. A copy
// always shares the open file description, as fork does.
package inject
