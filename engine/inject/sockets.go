package inject

import (
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// A socket belongs to the network namespace it was created in, for its
// whole life: its addresses, the abstract unix names it can reach, the
// sockets a sock_diag netlink socket lists. A job with a network namespace
// of its own needs its sockets made there, which the supervisor, outside
// and unprivileged, cannot enter; a process of the job can. The supervisor
// then works on its copy of the descriptor: binds, connects, TCP repair
// and queue refills act on the socket's own namespace, with the
// supervisor's credentials (the owner of the job's user namespace, and so
// CAP_NET_ADMIN over the job's network namespace).

// SocketMaker creates sockets in one network namespace and returns them as
// descriptors of the supervisor.
type SocketMaker interface {
	Socket(domain, typ, proto int) (int, error)
	Socketpair(domain, typ, proto int) ([2]int, error)
}

// Host makes sockets in the supervisor's own network namespace.
var Host SocketMaker = hostSockets{}

type hostSockets struct{}

func (hostSockets) Socket(domain, typ, proto int) (int, error) {
	return unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
}

func (hostSockets) Socketpair(domain, typ, proto int) ([2]int, error) {
	return unix.Socketpair(domain, typ|unix.SOCK_CLOEXEC, proto)
}

// Sockets returns the maker of sockets in the process's network namespace:
// Host when the supervisor shares it, else one that makes them with
// system calls injected into the process and copies them out.
func (p *Process) Sockets() SocketMaker {
	if sameNetNamespace(p.PID) == nil {
		return Host
	}
	return &injectedSockets{p: p}
}

// injectedSockets makes sockets inside the stopped process p.
type injectedSockets struct {
	mu sync.Mutex
	p  *Process
}

func (s *injectedSockets) Socket(domain, typ, proto int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fd, err := s.p.Main.Call("socket", unix.SYS_SOCKET, uint64(domain), uint64(typ|unix.SOCK_CLOEXEC), uint64(proto))
	if err != nil {
		return -1, fmt.Errorf("socket in pid %d: %w", s.p.PID, err)
	}
	return s.take(fd)
}

func (s *injectedSockets) Socketpair(domain, typ, proto int) ([2]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := [2]int{-1, -1}
	addr, err := s.p.ScratchAt(0, 8)
	if err != nil {
		return out, err
	}
	if _, err := s.p.Main.Call("socketpair", unix.SYS_SOCKETPAIR, uint64(domain), uint64(typ|unix.SOCK_CLOEXEC), uint64(proto), addr); err != nil {
		return out, fmt.Errorf("socketpair in pid %d: %w", s.p.PID, err)
	}
	b := make([]byte, 8)
	if err := s.p.Read(addr, b); err != nil {
		return out, err
	}
	fds := [2]uint64{uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[4:]))}
	for i, fd := range fds {
		if out[i], err = s.take(fd); err != nil {
			if i == 0 {
				s.p.Main.Call("close", unix.SYS_CLOSE, fds[1])
			} else {
				unix.Close(out[0])
			}
			return [2]int{-1, -1}, err
		}
	}
	return out, nil
}

// take copies the process's descriptor fd into the supervisor and closes it
// in the process.
func (s *injectedSockets) take(fd uint64) (int, error) {
	local, err := s.p.PullFD(fd)
	if _, cerr := s.p.Main.Call("close", unix.SYS_CLOSE, fd); cerr != nil && err == nil {
		unix.Close(local)
		return -1, cerr
	}
	return local, err
}
