package inetsock

import (
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// What needs more than one socket of the job waits for all of them: a
// connection's peer must exist before it sends anything, a waiting client
// needs its listener, a datagram its sender's address.

// Abandon closes the descriptors a failed restore left with the Finisher.
func (f *Finisher) Abandon() {
	for _, m := range f.made {
		unix.Close(m.fd)
	}
	f.made = nil
}

// Finish completes the restore once every socket of the job exists:
// connections leave repair mode (the peer of each is there to answer),
// send what was not sent yet, and a half-closed end sends its FIN again;
// clients waiting in a backlog connect to their restored listener; UDP
// queues are refilled by their senders. Then it closes its descriptors.
func (f *Finisher) Finish() error {
	defer f.Abandon()
	steps := []struct {
		name string
		do   func(m made) error
	}{
		{"leave repair mode", f.leaveRepair},
		{"connect to its listener", f.connectPending},
		{"send queued data", f.sendUnsent},
		{"shut down", f.shutdown},
		{"refill datagrams", f.refillUDP},
	}
	for _, step := range steps {
		for _, m := range f.made {
			if err := step.do(m); err != nil {
				return fmt.Errorf("%s socket %s: %s: %w", kindName(m.s), describe(m.s), step.name, err)
			}
		}
	}
	return nil
}

func (f *Finisher) leaveRepair(m made) error {
	if m.s.TCP == nil || m.s.State == image.InetPending {
		return nil
	}
	if err := repair(m.fd, unix.TCP_REPAIR_OFF); err != nil {
		return err
	}
	return unix.SetsockoptInt(m.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, m.s.Options["SO_REUSEADDR"])
}

// connectPending connects a client that waited in a listener's backlog
// from its own address, so that the connection waits there again. Its
// sequence numbers are new; the peer had read nothing of it (Pair).
func (f *Finisher) connectPending(m made) error {
	s := m.s
	if s.State != image.InetPending {
		return nil
	}
	if err := bindForced(m.fd, s.Family, s.Local); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(m.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, s.Options["SO_REUSEADDR"]); err != nil {
		return err
	}
	peer, err := sockaddr(s.Family, s.Peer)
	if err != nil {
		return err
	}
	// The descriptor's O_NONBLOCK is the job's: connect through a
	// poll either way.
	err = unix.Connect(m.fd, peer)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(m.fd), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, int(connectTimeout/time.Millisecond)); err != nil || n == 0 {
		return fmt.Errorf("no answer from the listener within %v (%v)", connectTimeout, err)
	}
	if soErr, err := unix.GetsockoptInt(m.fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || soErr != 0 {
		return fmt.Errorf("connect: %v", errors.Join(err, unix.Errno(soErr)))
	}
	logrus.Debugf("TCP %s: connected again to %s, where it waits to be accepted", s.Local, s.Peer)
	return nil
}

// sendUnsent sends what the job had written and the kernel not sent yet,
// and for a waiting client all it had written.
func (f *Finisher) sendUnsent(m made) error {
	c := m.s.TCP
	if c == nil {
		return nil
	}
	if m.s.State == image.InetPending {
		return sendAll(m.fd, c.SendQueue)
	}
	return sendAll(m.fd, c.SendQueue[len(c.SendQueue)-c.Unsent:])
}

func (f *Finisher) shutdown(m made) error {
	if m.s.State != image.InetFinWait2 {
		return nil
	}
	return unix.Shutdown(m.fd, unix.SHUT_WR)
}

// refillUDP sends each queued datagram to the socket again from the
// address it came from: from the job's own socket bound there when there
// is one (its port is taken), else from a throw-away socket bound to it.
func (f *Finisher) refillUDP(m made) error {
	s := m.s
	if s.Type != unix.SOCK_DGRAM || len(s.Datagrams) == 0 {
		return nil
	}
	to, err := unix.Getsockname(m.fd)
	if err != nil {
		return err
	}
	for i, d := range s.Datagrams {
		if err := f.sendFrom(s.Family, d, to); err != nil {
			return fmt.Errorf("datagram %d of %d from %s: %w", i+1, len(s.Datagrams), d.From, err)
		}
	}
	return nil
}

func (f *Finisher) sendFrom(family int, d image.Datagram, to unix.Sockaddr) error {
	for _, o := range f.made {
		if o.s.Type == unix.SOCK_DGRAM && o.s.Local != "" && norm(o.s.Local) == norm(d.From) {
			return unix.Sendto(o.fd, d.Data, unix.MSG_DONTWAIT, to)
		}
	}
	tmp, err := f.net.Socket(family, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	if err != nil {
		return err
	}
	defer unix.Close(tmp)
	if d.From != "" {
		// IP_FREEBIND: the sender's address need not be one the
		// namespace has.
		unix.SetsockoptInt(tmp, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		sa, err := sockaddr(family, d.From)
		if err != nil {
			return err
		}
		if err := unix.Bind(tmp, sa); err != nil {
			return fmt.Errorf("bind the sender's address: %w", err)
		}
	}
	return unix.Sendto(tmp, d.Data, unix.MSG_DONTWAIT, to)
}
