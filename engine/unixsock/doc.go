// Package unixsock finds, reads and re-creates the AF_UNIX sockets of a
// stopped job.
//
// It owns three steps of the unix socket life cycle in a checkpoint:
//
//   - Diag lists every AF_UNIX socket of the caller's network namespace
//     through NETLINK_SOCK_DIAG, keyed by socket inode, so the engine can
//     match the inodes it sees in /proc/<pid>/fd with their peers, names,
//     states and shutdown bits.
//   - PeekQueue reads what waits in a socket's receive queue without
//     consuming it (SO_PEEK_OFF + MSG_PEEK), on a descriptor the engine has
//     copied out of the job with pidfd_getfd. The job is ptrace-stopped, so
//     nothing competes for the queue.
//   - Create, Refill and ApplyShutdown (and Restore, which runs them in the
//     right order) build the sockets again in the restorer and put the
//     queued data back into them.
//
// File descriptors in flight (SCM_RIGHTS) are refused with an error: they
// would need the whole fd restore machinery to re-create.
package unixsock
