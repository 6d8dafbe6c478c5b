package fds

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inetsock"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/unixsock"
)

// unixKind is a socket. AF_UNIX sockets are taken along with their queued
// data, TCP and UDP ones as inet.go says; any other (netlink, packet...)
// reaches beyond the job and fails the checkpoint with its kind named. A
// unix socket and its peer are re-created together in the supervisor,
// where the queues are refilled, and passed to the processes that had
// them.
type unixKind struct{}

func (unixKind) records() []image.FDKind { return []image.FDKind{image.FDUnix, image.FDInet} }

func (unixKind) claims(c *dumpCtx) bool { return strings.HasPrefix(c.fd.Target, "socket:[") }

func (unixKind) dump(c *dumpCtx, out *image.FD) error {
	t := c.fd.Target
	ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(t, "socket:["), "]"), 10, 64)
	if err != nil {
		return fmt.Errorf("socket %q: %w", t, err)
	}
	return c.dumpSocket(ino, out)
}

func (unixKind) restore(c *restoreCtx, f *image.FD) error {
	if f.Kind == image.FDInet {
		return c.restoreInet(f)
	}
	return c.restoreUnix(f)
}

// dumpSocket records the socket with inode ino.
func (c *dumpCtx) dumpSocket(ino uint64, out *image.FD) error {
	if c.socks == nil {
		socks, info, err := unixsock.Diag(c.p.Sockets())
		if err != nil {
			return err
		}
		c.socks, c.sockInfo = socks, info
	}
	s, ok := c.socks[ino]
	if !ok && isInet(c.p, c.fd.Num) {
		return c.dumpInet(ino, out)
	}
	if !ok {
		return fmt.Errorf("socket:[%d] (%s): only unix, TCP and UDP sockets between processes of the job are supported", ino, socketKind(c.p, c.fd.Num))
	}
	info := c.sockInfo[ino]
	if info.PendingOn != 0 || len(info.Pending) > 0 {
		return fmt.Errorf("unix socket %s has a connection not accepted yet: not supported; checkpoint again in a moment", sockName(s))
	}
	rec := *s
	if c.opts.Container {
		if err := checkSocketPath(c.p.PID, &rec); err != nil {
			return err
		}
	}
	out.Kind, out.Unix = image.FDUnix, &rec
	c.unixSeen[ino] = true
	if !c.first || rec.State == unixsock.StateListen {
		// A listener queues connections, not data; pending ones were
		// refused above.
		return nil
	}
	local, err := c.p.PullFD(uint64(c.fd.Num))
	if err != nil {
		return err
	}
	defer unix.Close(local)
	if rec.Queue, err = unixsock.PeekQueue(local, rec.Type); err != nil {
		return fmt.Errorf("unix socket %s: %w", sockName(s), err)
	}
	return nil
}

// checkSocketPath refuses a container's unix socket bound to a path that
// the supervisor, which binds the name again at restart, does not see as
// the same file: a path private to the container (its own /tmp with
// --contain), or one bound in from another host path (--bind /a:/b). A
// path the container shares with the host at the same place (/tmp and
// $HOME by default, --bind /a:/a) is the same file.
func checkSocketPath(hostPID int, s *image.UnixSocket) error {
	if s.Name == "" || strings.HasPrefix(s.Name, "@") || !path.IsAbs(s.Name) {
		return nil
	}
	inside, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", hostPID, s.Name))
	if err != nil {
		return nil // unlinked: nothing to match
	}
	if outside, err := os.Stat(s.Name); err == nil && os.SameFile(inside, outside) {
		return nil
	}
	return fmt.Errorf("unix socket %s is bound to a path inside the container that the host does not have at the same place: not supported yet (bind the socket where the container shares the host's path, e.g. /tmp without --contain, or --bind DIR:DIR)", sockName(s))
}

// CheckPeers refuses unix sockets connected to a socket outside the job (a
// system daemon, the user's session): that end cannot be restored. It runs
// once every process is dumped.
func (jd *Dumper) CheckPeers(procs []*image.Process) error {
	if err := inetsock.Pair(jd.inet); err != nil {
		return err
	}
	if err := jd.checkPtys(); err != nil {
		return err
	}
	for _, p := range procs {
		for _, f := range p.Files {
			if f.Kind != image.FDUnix || f.Unix.PeerInode == 0 || jd.unixSeen[f.Unix.PeerInode] {
				continue
			}
			return fmt.Errorf("pid %d fd %d: unix socket %s is connected to %s outside the job: not supported", p.PID, f.Num, sockName(f.Unix), peerName(f.Unix))
		}
	}
	return nil
}

func sockName(s *image.UnixSocket) string {
	if s.Name != "" {
		return fmt.Sprintf("%q (socket:[%d])", s.Name, s.Inode)
	}
	return fmt.Sprintf("socket:[%d]", s.Inode)
}

func peerName(s *image.UnixSocket) string {
	if s.PeerName != "" {
		return fmt.Sprintf("%q (socket:[%d])", s.PeerName, s.PeerInode)
	}
	return fmt.Sprintf("socket:[%d]", s.PeerInode)
}

// socketKind names a socket's family, type and protocol for an error.
func socketKind(rem *inject.Process, fd int) string {
	local, err := rem.PullFD(uint64(fd))
	if err != nil {
		return "unknown kind"
	}
	defer unix.Close(local)
	dom, _ := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_DOMAIN)
	typ, _ := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_TYPE)
	proto, _ := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	family := map[int]string{unix.AF_INET: "IPv4", unix.AF_INET6: "IPv6", unix.AF_NETLINK: "netlink",
		unix.AF_PACKET: "packet", unix.AF_UNIX: "unix"}[dom]
	if family == "" {
		family = fmt.Sprintf("family %d", dom)
	}
	switch {
	case (dom == unix.AF_INET || dom == unix.AF_INET6) && proto == unix.IPPROTO_TCP:
		return family + " TCP"
	case (dom == unix.AF_INET || dom == unix.AF_INET6) && proto == unix.IPPROTO_UDP:
		return family + " UDP"
	}
	return fmt.Sprintf("%s socket type %d protocol %d", family, typ, proto)
}

// restoreUnix re-creates a unix socket, and its peer when the peer is in
// the job, in the supervisor (where the queues are refilled and shutdowns
// applied), then passes them to the process. The peer is left on a spare
// descriptor, from which the process that had it takes it.
func (c *restoreCtx) restoreUnix(f *image.FD) error {
	if f.Unix == nil {
		return fmt.Errorf("unix socket descriptor without its socket in the image")
	}
	jr := c.Restorer
	s := *f.Unix
	var peer *image.UnixSocket
	if s.PeerInode != 0 {
		pf := jr.unix[s.PeerInode]
		if pf == nil {
			return fmt.Errorf("unix socket %s: its peer %s is not in the image", sockName(&s), peerName(&s))
		}
		if jr.holders[pf.OFD].P != nil {
			return fmt.Errorf("unix socket %s: its peer was restored on its own", sockName(&s))
		}
		p := *pf.Unix
		peer = &p
	}
	// Names are bound by the supervisor: relative ones are made absolute
	// against the process's working directory.
	for _, u := range []*image.UnixSocket{&s, peer} {
		if u != nil && u.Name != "" && !strings.HasPrefix(u.Name, "@") && !path.IsAbs(u.Name) {
			u.Name = path.Join(c.img.Cwd, u.Name)
		}
	}
	fd, peerFD, err := unixsock.Restore(c.p.Sockets(), &s, peer)
	if err != nil {
		return err
	}
	local := []int{fd}
	if peerFD >= 0 {
		local = append(local, peerFD)
	}
	defer func() {
		for _, l := range local {
			unix.Close(l)
		}
	}()
	got, err := c.p.PushFDs(local)
	if err != nil {
		return fmt.Errorf("unix socket %s: %w", sockName(&s), err)
	}
	if len(got) > 1 {
		h, err := c.keepHigh(got[1])
		if err != nil {
			return err
		}
		jr.holders[jr.unix[s.PeerInode].OFD] = h
	}
	return c.finishEnd(got[0], f)
}

// unixOf indexes the image's unix socket descriptors by socket inode (the
// first descriptor of each).
func unixOf(procs []*image.Process) map[uint64]*image.FD {
	out := map[uint64]*image.FD{}
	for _, p := range procs {
		for i := range p.Files {
			f := &p.Files[i]
			if f.Kind == image.FDUnix && f.Unix != nil && out[f.Unix.Inode] == nil {
				out[f.Unix.Inode] = f
			}
		}
	}
	return out
}
