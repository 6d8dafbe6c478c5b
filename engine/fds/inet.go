package fds

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inetsock"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// TCP and UDP sockets are taken only from a job with a network namespace
// of its own (--net private): there the supervisor may put connections in
// repair mode, and a restart binds the same addresses in a namespace as
// empty as the first. In the node's namespace they are refused, saying
// so.

// isInet says whether descriptor fd of p is an IPv4 or IPv6 socket.
func isInet(p *inject.Process, fd int) bool {
	local, err := p.PullFD(uint64(fd))
	if err != nil {
		return false
	}
	defer unix.Close(local)
	dom, err := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && (dom == unix.AF_INET || dom == unix.AF_INET6)
}

// dumpInet records the TCP or UDP socket with inode ino.
func (c *dumpCtx) dumpInet(ino uint64, out *image.FD) error {
	kind := socketKind(c.p, c.fd.Num)
	if c.p.Sockets() == inject.Host {
		return fmt.Errorf("socket:[%d] (%s): the job shares the node's network: %w", ino, kind, inetsock.ErrNeedsOwnNetwork)
	}
	out.Kind = image.FDInet
	if !c.first {
		// Restored as a copy of the first descriptor of its open file
		// description, which holds the state.
		out.Inet = &image.InetSocket{}
		return nil
	}
	local, err := c.p.PullFD(uint64(c.fd.Num))
	if err != nil {
		return err
	}
	defer unix.Close(local)
	s, err := inetsock.Dump(local)
	if err != nil {
		return fmt.Errorf("socket:[%d] (%s): %w", ino, kind, err)
	}
	out.Inet = s
	c.inet = append(c.inet, inetsock.Ref{PID: c.pid, FD: c.fd.Num, S: s})
	return nil
}

// restoreInet re-creates a TCP or UDP socket in the process's network
// namespace; what needs its peer too is finished in Release.
func (c *restoreCtx) restoreInet(f *image.FD) error {
	if f.Inet == nil || f.Inet.Family == 0 {
		return fmt.Errorf("TCP or UDP socket descriptor without its socket in the image")
	}
	fd, err := c.inet.Create(c.p.Sockets(), f.Inet)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	got, err := c.p.PushFDs([]int{fd})
	if err != nil {
		return err
	}
	return c.finishEnd(got[0], f)
}
