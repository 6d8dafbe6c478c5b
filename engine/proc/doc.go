// Package proc reads what the engine needs from /proc: a process's memory
// map (smaps), its pagemap, stat and status fields, auxv, and the file
// descriptor table with fdinfo. Paths are built for host pids; nothing here
// changes the process it reads.
package proc
