// Package fileid tells whether a file is the one a checkpoint recorded.
//
// Files the restore opens again by path (the executable, mapped libraries,
// descriptors, the files the rollback cuts) are recorded with their size,
// mtime, device and inode, and digests of their first and last DigestSpan
// bytes. On the node that took the checkpoint the device and inode tell the
// same file; on another node (a requeue), where they differ even on a shared
// file system, the digests do.
package fileid
