package fds

import (
	"errors"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fileid"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

// devicesReopened are the character devices a restore opens again by path.
var devicesReopened = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/random": true, "/dev/urandom": true, "/dev/full": true,
}

// ReopenedDevice reports whether a descriptor of the device at path is
// restored by opening the path again.
func ReopenedDevice(path string) bool { return devicesReopened[path] }

// deviceKind is a descriptor of a stateless character device.
type deviceKind struct{}

func (deviceKind) records() []image.FDKind { return []image.FDKind{image.FDDevice} }

func (deviceKind) claims(c *dumpCtx) bool { return devicesReopened[c.fd.Target] }

func (deviceKind) dump(c *dumpCtx, out *image.FD) error {
	out.Kind, out.Path = image.FDDevice, c.fd.Target
	return nil
}

func (deviceKind) restore(c *restoreCtx, f *image.FD) error { return c.reopen(f) }

// regularKind is a regular file or a directory, opened again by path at
// its recorded offset. The file is recorded with its identity, so that a
// restart can tell it is still the file the job had open (Rollback).
type regularKind struct{}

func (regularKind) records() []image.FDKind { return []image.FDKind{image.FDFile} }

func (regularKind) claims(c *dumpCtx) bool {
	return c.st != nil && (c.st.Mode().IsRegular() || c.st.IsDir())
}

func (regularKind) dump(c *dumpCtx, out *image.FD) error {
	id, err := fileid.OfProc(c.p.PID, c.fd.Target)
	if err != nil {
		return err
	}
	out.Kind, out.Path, out.File = image.FDFile, c.fd.Target, id
	return nil
}

func (regularKind) restore(c *restoreCtx, f *image.FD) error {
	if err := c.reopen(f); err != nil {
		return err
	}
	if f.Pos != 0 {
		if _, err := c.p.Main.Call("lseek", unix.SYS_LSEEK, uint64(f.Num), uint64(f.Pos), unix.SEEK_SET); err != nil {
			return err
		}
	}
	return nil
}

// reopen opens f's path again with its recorded flags, less those that
// act only when a file is opened (creating or truncating it).
func (c *restoreCtx) reopen(f *image.FD) error {
	flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | unix.O_NOCTTY)
	fd, err := c.p.Openat(f.Path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
}

// RollbackOptions say how Rollback treats files that changed.
type RollbackOptions struct {
	// Strict refuses a file that is not the one the job had open, instead
	// of warning.
	Strict bool
	// NoRollback keeps what was written after the checkpoint.
	NoRollback bool
	Log        logrus.FieldLogger
}

// Rollback cuts files the job was writing back to their length at
// checkpoint time, so output the job wrote after the checkpoint, and will
// write again after the restart, is not there twice. A file is never cut
// below that length, and never emptied; one that is not the file the job
// had open (rotated away and replaced: other contents) is never cut at all.
// It is left as it is with a warning, or, with opts.Strict, the restore is
// refused; the same holds for a file the job only read. A file the job
// writes at an offset (not appending) is always refused: its writes would
// land in the middle of another file. root is where the job's files are
// seen from the supervisor.
func Rollback(p *image.Process, opts RollbackOptions, root string) error {
	for _, fd := range p.Files {
		if fd.Kind != image.FDFile || fd.File == nil {
			continue
		}
		path := root + fd.Path
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return fmt.Errorf("fd %d: %s: %w (the job had it open at checkpoint time)", fd.Num, fd.Path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		same, err := fileid.SameWritten(path, &st, fd.File)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd.Num, err)
		}
		if !same {
			msg := fmt.Sprintf("fd %d: %s is not the file the job had open at checkpoint time (%d bytes then, other contents now: rotated or replaced)",
				fd.Num, fd.Path, fd.File.Size)
			switch {
			case fd.Writable() && fd.Flags&unix.O_APPEND == 0:
				// Its writes at the old offset would overwrite the new
				// file's data.
				return &node.Error{Err: fmt.Errorf("%s; refused: the job writes at offset %d in it and would overwrite its data. Move it aside and put the job's file back at %s, or restart from the beginning",
					msg, fd.Pos, fd.Path)}
			case opts.Strict:
				return &node.Error{Err: errors.New(msg + "; refused (--strict)")}
			case fd.Writable():
				opts.Log.Warnf("%s: left as it is; the job appends to it from here on", msg)
			default:
				opts.Log.Warnf("%s: left as it is; the job reads it at its old offset", msg)
			}
			continue
		}
		if !fd.Writable() {
			continue
		}
		switch {
		case st.Size > fd.File.Size && opts.NoRollback:
			opts.Log.Infof("fd %d: %s is %d bytes longer than at checkpoint time; kept (--no-rollback)", fd.Num, fd.Path, st.Size-fd.File.Size)
		case st.Size > fd.File.Size:
			opts.Log.Infof("fd %d: rolling %s back from %d to %d bytes (its length at checkpoint time)", fd.Num, fd.Path, st.Size, fd.File.Size)
			if err := os.Truncate(path, fd.File.Size); err != nil {
				return fmt.Errorf("fd %d: roll back %s: %w", fd.Num, fd.Path, err)
			}
		case st.Size < fd.File.Size:
			opts.Log.Warnf("fd %d: %s is shorter (%d bytes) than at checkpoint time (%d); the job resumes at its old offset", fd.Num, fd.Path, st.Size, fd.File.Size)
		}
	}
	return nil
}
