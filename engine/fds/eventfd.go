package fds

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// eventfdKind is an eventfd, re-created with its counter and mode.
type eventfdKind struct{}

func (eventfdKind) records() []image.FDKind { return []image.FDKind{image.FDEventfd} }

func (eventfdKind) claims(c *dumpCtx) bool { return c.fd.Target == "anon_inode:[eventfd]" }

func (eventfdKind) dump(c *dumpCtx, out *image.FD) error {
	out.Kind = image.FDEventfd
	v, ok := c.fd.InfoValue("eventfd-count")
	if !ok {
		return fmt.Errorf("eventfd without eventfd-count in fdinfo")
	}
	n, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return fmt.Errorf("eventfd-count %q: %w", v, err)
	}
	out.EventfdCount = n
	if s, ok := c.fd.InfoValue("eventfd-semaphore"); ok && s == "1" {
		out.EventfdSemaphore = true
	}
	return nil
}

func (eventfdKind) restore(c *restoreCtx, f *image.FD) error {
	flags := uint64(unix.EFD_CLOEXEC)
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.EFD_NONBLOCK
	}
	if f.EventfdSemaphore {
		flags |= unix.EFD_SEMAPHORE
	}
	fd, err := c.p.Main.Call("eventfd2", unix.SYS_EVENTFD2, f.EventfdCount, flags)
	if err != nil {
		return err
	}
	return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
}
