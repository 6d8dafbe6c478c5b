// Package supervisor holds the use cases of the tool: launch a job, restart
// it from a checkpoint, run (whichever of the two the checkpoint directory
// calls for), and the checkpoints the supervisor takes while it watches the
// job (periodic, on request over its control socket, on SIGTERM or
// --signal). Each is a function taking an Options struct; the command line
// in package main only reads flags into one and prints.
//
// A supervisor owns one job: the checkpoint directory (locked), the job
// cgroup, the sandbox the job runs in, its hooks and its Slurm requeue. It
// drives package engine for the checkpoints and restores, package cgroup
// to freeze the job, package namespaces for the sandbox and package hooks
// for the site's and the user's steps around them.
package supervisor
