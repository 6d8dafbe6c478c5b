// Package image defines the on-disk checkpoint format and the store that
// writes and reads it.
//
// A checkpoint directory holds numbered generations (gen-000001, ...). Each
// generation is written under a temporary name, fsync'd and renamed into
// place; the "latest" symlink is replaced last, so a crash at any moment
// leaves the previous generation intact. A generation holds a JSON manifest
// (Manifest), one JSON core file per process (Process) and one page file per
// process whose page runs are page-aligned, so a restore can read or map them
// without per-page work.
//
// Nothing else in the code invents image fields: the types here are the
// format, and FormatVersion is its version.
package image
