package fds

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// epollKind is an epoll instance with its registrations. The instance is
// created with the process's other descriptors; the registrations are
// added once every descriptor of the process is back (finish), since they
// name descriptors by number.
type epollKind struct{}

func (epollKind) records() []image.FDKind { return []image.FDKind{image.FDEpoll} }

func (epollKind) claims(c *dumpCtx) bool { return c.fd.Target == "anon_inode:[eventpoll]" }

func (epollKind) dump(c *dumpCtx, out *image.FD) error {
	entries, err := epollEntries(c.fd)
	if err != nil {
		return err
	}
	out.Kind, out.Epoll = image.FDEpoll, entries
	return nil
}

func (epollKind) restore(c *restoreCtx, f *image.FD) error {
	fd, err := c.p.Main.Call("epoll_create1", unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true); err != nil {
		return err
	}
	c.finish = append(c.finish, func() error {
		if err := c.restoreEpollEntries(f); err != nil {
			return fmt.Errorf("fd %d (epoll): %w", f.Num, err)
		}
		return nil
	})
	return nil
}

// epollEntries parses the "tfd: N events: X data: Y" lines of an epoll fdinfo.
func epollEntries(fd *proc.FD) ([]image.EpollEntry, error) {
	var out []image.EpollEntry
	for _, l := range fd.Info {
		if !strings.HasPrefix(l, "tfd:") {
			continue
		}
		f := strings.Fields(l)
		var e image.EpollEntry
		for i := 0; i+1 < len(f); i += 2 {
			switch f[i] {
			case "tfd:":
				n, err := strconv.Atoi(f[i+1])
				if err != nil {
					return nil, fmt.Errorf("epoll fdinfo %q: %w", l, err)
				}
				e.FD = n
			case "events:":
				n, err := strconv.ParseUint(f[i+1], 16, 32)
				if err != nil {
					return nil, fmt.Errorf("epoll fdinfo %q: %w", l, err)
				}
				e.Events = uint32(n)
			case "data:":
				n, err := strconv.ParseUint(f[i+1], 16, 64)
				if err != nil {
					return nil, fmt.Errorf("epoll fdinfo %q: %w", l, err)
				}
				e.Data = n
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// restoreEpollEntries registers the recorded fds on a restored epoll fd.
func (c *restoreCtx) restoreEpollEntries(f *image.FD) error {
	addr, err := c.p.ScratchAt(0, abi.EpollEventSize)
	if err != nil {
		return err
	}
	for _, e := range f.Epoll {
		if err := c.p.Write(addr, abi.EpollEvent(e.Events, e.Data)); err != nil {
			return err
		}
		if _, err := c.p.Main.Call("epoll_ctl", unix.SYS_EPOLL_CTL, uint64(f.Num), unix.EPOLL_CTL_ADD, uint64(e.FD), addr); err != nil {
			return fmt.Errorf("register fd %d: %w", e.FD, err)
		}
	}
	return nil
}
