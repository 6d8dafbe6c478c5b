package fds

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// signalfdKind is a signalfd, re-created with its signal mask. Signals
// queued for it are the process's pending signals, restored with them.
type signalfdKind struct{}

func (signalfdKind) records() []image.FDKind { return []image.FDKind{image.FDSignalfd} }

func (signalfdKind) claims(c *dumpCtx) bool { return c.fd.Target == "anon_inode:[signalfd]" }

func (signalfdKind) dump(c *dumpCtx, out *image.FD) error {
	v, ok := c.fd.InfoValue("sigmask")
	if !ok {
		return fmt.Errorf("signalfd without sigmask in fdinfo")
	}
	mask, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return fmt.Errorf("signalfd sigmask %q: %w", v, err)
	}
	out.Kind, out.Anon = image.FDSignalfd, &image.AnonFD{Signalfd: &image.Signalfd{Mask: mask}}
	return nil
}

func (signalfdKind) restore(c *restoreCtx, f *image.FD) error {
	if f.Anon == nil || f.Anon.Signalfd == nil {
		return fmt.Errorf("signalfd descriptor without its state in the image")
	}
	addr, err := c.p.ScratchAt(0, abi.SigsetSize)
	if err != nil {
		return err
	}
	b := make([]byte, abi.SigsetSize)
	abi.PutU64(b, f.Anon.Signalfd.Mask)
	if err := c.p.Write(addr, b); err != nil {
		return err
	}
	flags := uint64(unix.SFD_CLOEXEC)
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.SFD_NONBLOCK
	}
	fd, err := c.p.Main.Call("signalfd4", unix.SYS_SIGNALFD4, ^uint64(0), addr, abi.SigsetSize, flags)
	if err != nil {
		return fmt.Errorf("signalfd: %w", err)
	}
	return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
}
