// Package inetsock reads and re-creates the TCP and UDP sockets of a job
// that has a network namespace of its own.
//
// A TCP connection whose two ends are both in the job is taken as the
// kernel holds it, through TCP_REPAIR: sequence numbers, the data queued
// in both directions (sent and not yet acknowledged, not yet sent, received
// and not yet read), the options negotiated at connect time and the
// windows. At restore both ends are rebuilt in repair mode, where bind and
// connect exchange no packet, and leave it only once every socket of the
// job exists (Finisher), so that nothing is sent to an end that is not
// there yet. TCP_REPAIR needs CAP_NET_ADMIN over the socket's network
// namespace: the supervisor has it over the job's own one, as the owner of
// the job's user namespace, and never over the node's.
//
// The steps of a checkpoint and a restore:
//
//   - Dump records a socket from the supervisor's copy of its descriptor:
//     addresses, state, socket options (options.go), and for a connection
//     its repair state (tcp.go) or for UDP its queued datagrams (udp.go).
//   - Pair (pairs.go) matches the connections of the whole job with each
//     other, tells a client waiting in a listener's backlog, and refuses a
//     connection to anything outside the job, naming both addresses.
//   - Create makes a socket again in the job's namespace, and Finisher
//     completes what needs every socket: listeners listen, connections
//     leave repair mode, half-closed ones send their FIN again, waiting
//     clients connect, UDP queues are refilled from their senders.
package inetsock
