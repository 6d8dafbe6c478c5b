package fds

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// stdioKind is a descriptor sharing the open file of one of the
// supervisor's standard streams (a terminal, or the pipes of the batch
// system): re-attached at restore to the restarting supervisor's stream,
// which the stub starts with on fds 0-2.
type stdioKind struct{}

func (stdioKind) records() []image.FDKind { return []image.FDKind{image.FDStdio} }

func (stdioKind) claims(c *dumpCtx) bool { return c.stdioNum() >= 0 }

// stdioNum is the supervisor's stream the descriptor shares its open file
// with, or -1.
func (c *dumpCtx) stdioNum() int {
	if c.opts.Stdio.PID == 0 {
		return -1
	}
	for s := 0; s <= 2; s++ {
		if inject.SameOpenFile(c.opts.Stdio.PID, s, c.p.PID, c.fd.Num) {
			return s
		}
	}
	return -1
}

func (stdioKind) dump(c *dumpCtx, out *image.FD) error {
	out.Kind, out.Stdio = image.FDStdio, c.stdioNum()
	return nil
}

func (stdioKind) restore(c *restoreCtx, f *image.FD) error {
	if f.Stdio < 0 || f.Stdio >= len(c.stdio) {
		return fmt.Errorf("standard stream %d: there are three", f.Stdio)
	}
	return c.moveFD(c.stdio[f.Stdio], f.Num, f.Flags&unix.O_CLOEXEC != 0, false)
}
