// Package fds dumps a process's file descriptors and re-creates them in a
// restored process.
//
// Each kind of descriptor (a regular file, a pipe end, a unix socket, an
// eventfd...) is one type in a file of its own, named after the kind, with
// both directions side by side: claims says from the descriptor's /proc
// link (and, for paths, its file type) whether the descriptor is of this
// kind, dump records it in an image.FD, and restore re-creates it in the
// restored process by injected system calls. kinds in kind.go lists them in
// the order they are asked; the first that claims a descriptor dumps it.
// table.go walks a process's descriptor table at checkpoint, restore.go at
// restore; neither knows any kind by name.
//
// State held by an open file description rather than by the descriptor
// (the data buffered in a pipe, a socket's queue, a memfd's contents) is
// dumped once, with the first descriptor met that refers to it; ofd.go
// numbers the job's open file descriptions so that every other descriptor,
// in this process or another, is restored as a copy of that one (a dup
// within a process, pidfd_getfd across processes), sharing the offset and
// status flags as fork and dup made them share.
//
// To add a kind: record its state in a field of image.FD (engine/image),
// write <kind>.go here with a type implementing kind and a round-trip test
// beside it (dump in a traced child, restore into another, compare), and
// add the type to kinds.
package fds
