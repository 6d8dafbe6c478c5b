// Package apptainer understands Apptainer (and Singularity) command lines
// and owns the container record of a checkpoint: what a job's
// `apptainer exec|run|shell|instance start` asked for, which image it
// used (path, size, mtime and SHA-256 digest), which host paths it bound
// in, and how to have Apptainer build the same container again at restart.
//
// Apptainer's own runtime (starter, squashfuse_ll, fuse-overlayfs) cannot
// be checkpointed, so a restart runs the recorded command line again with
// the restorer's stub as the container's command and restores the
// application inside the new container. This package decides which
// command lines allow that (Parse refuses the rest with a reason), records
// the container (NewRecord), checks at restart that the image and binds
// are still what the checkpoint saw (Verify), builds the restart command
// line (RestartArgv) and compares the new container's mount table with the
// recorded one (CompareMounts). For an instance, whose startscript is its
// command, the restart binds the stub over the startscript, and the
// instance's state file, which names the instance's processes by pid, is
// found, claimed for the name and renumbered to host pids (InstanceState).
package apptainer
