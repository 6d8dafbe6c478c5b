// Package cgroup owns the job cgroup: it finds a writable (delegated) parent,
// creates the job cgroup under it, moves processes in, freezes and thaws it
// with the kernel's own state verified and a timeout, records the resource
// limits in force as runtime-spec LinuxResources and applies them to a new
// cgroup at restore, and removes the cgroup when the job has ended.
//
// Both the cgroup v2 freezer (cgroup.freeze) and the cgroup v1 freezer
// controller (freezer.state) are supported. When no writable cgroup can be
// found, Create returns an error wrapping ErrNoWritableCgroup so that the
// caller can fall back to stopping the job with ptrace alone.
//
// Mount points are never assumed: every hierarchy is located through
// /proc/self/mountinfo.
//
// The package writes the cgroup files itself (cgroup.freeze, freezer.state,
// cgroup.procs, cgroup.kill and the limits) rather than through a cgroup
// library: each is one write of a documented value, and what matters is
// around it (waiting, with a bound, for the kernel to report the freeze
// done; never leaving a retry loop running behind a timeout; telling an
// ancestor's freeze from our own), which general cgroup managers do not
// offer and would have to be worked around.
package cgroup
