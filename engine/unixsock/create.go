package unixsock

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// Restore re-creates the recorded socket s in the caller, with its queued
// data and shutdown bits, and returns its descriptor. When s is connected to
// a socket of the job, peer is that socket's record; both ends are built
// together and peerFD is the peer's descriptor, else peerFD is -1.
//
// Call it once per connected pair, with the connecting end as s when only
// one end is connected (a datagram socket connected to an unconnected,
// named receiver). How each kind is rebuilt:
//
//   - listening: a socket bound to Name, listening with Backlog; pending
//     connections are made again by ConnectPending.
//   - connected to peer: a socketpair. Names are cosmetic for connected
//     sockets (nothing can connect to them again), so they are not bound;
//     getsockname on the restored sockets shows no name.
//   - datagram connected to an unconnected peer: a socketpair whose peer
//     end is then disconnected and bound to the peer's name.
//   - stream or seqpacket connected to a peer that is gone (PeerInode 0,
//     peer nil): a socketpair
//     whose other end is closed after filling the queue, so reads drain the
//     data and then see end of file, as before. A client whose connection
//     waits in a listener's backlog also shows PeerInode 0 (Info.PendingOn
//     tells): rebuild it with ConnectPending instead.
//   - unconnected (for a datagram socket: any without a peer of its own,
//     see Diag): a socket bound to Name, if any; a queued datagram backlog
//     is sent to that name from a throw-away socket.
//
// On error every descriptor created here is closed.
func Restore(net inject.SocketMaker, s, peer *image.UnixSocket) (fd, peerFD int, err error) {
	fd, peerFD = -1, -1
	defer func() {
		if err != nil {
			closeFD(fd)
			closeFD(peerFD)
			fd, peerFD = -1, -1
		}
	}()
	switch s.State {
	case StateListen:
		if len(s.Queue) > 0 {
			return fd, peerFD, fmt.Errorf("restore unix socket %d: a listening socket with queued data is not supported", s.Inode)
		}
		fd, err = CreateListener(net, s)
		return fd, peerFD, err

	case StateUnconnected:
		if fd, err = newSocket(net, s.Type); err != nil {
			return fd, peerFD, fmt.Errorf("restore unix socket %d: %w", s.Inode, err)
		}
		if s.Name != "" {
			if err = bindName(fd, s.Name); err != nil {
				return fd, peerFD, fmt.Errorf("restore unix socket %d: %w", s.Inode, err)
			}
		}
		if err = refillUnconnected(net, s); err != nil {
			return fd, peerFD, fmt.Errorf("restore unix socket %d: %w", s.Inode, err)
		}
		return fd, peerFD, ApplyShutdown(fd, s.Shutdown)

	case StateConnected:
	default:
		return fd, peerFD, fmt.Errorf("restore unix socket %d: state %q is not supported", s.Inode, s.State)
	}

	oneWay, gone, err := pairKind(s, peer)
	if err != nil {
		return fd, peerFD, fmt.Errorf("restore unix socket %d: %w", s.Inode, err)
	}
	fd, other, err := CreatePair(net, s.Type)
	if err != nil {
		return fd, peerFD, fmt.Errorf("restore unix socket %d: %w", s.Inode, err)
	}
	peerFD = other
	// What s had queued was sent by its peer: write it from the other end.
	if err = Refill(peerFD, s.Type, s.Queue); err != nil {
		return fd, peerFD, fmt.Errorf("restore unix socket %d: %w", s.Inode, err)
	}
	if gone {
		closeFD(peerFD)
		peerFD = -1
		return fd, peerFD, ApplyShutdown(fd, s.Shutdown)
	}
	if oneWay {
		// Disconnecting purges the disconnecting socket's own queue,
		// so it happens before that queue is filled.
		if err = disconnect(peerFD); err != nil {
			return fd, peerFD, fmt.Errorf("restore unix socket %d: peer %d: %w", s.Inode, peer.Inode, err)
		}
		if peer.Name != "" {
			if err = bindName(peerFD, peer.Name); err != nil {
				return fd, peerFD, fmt.Errorf("restore unix socket %d: peer %d: %w", s.Inode, peer.Inode, err)
			}
		}
	}
	if err = refill(fd, s.Type, peer.Queue, nil, oneWay); err != nil {
		return fd, peerFD, fmt.Errorf("restore unix socket %d: peer %d: %w", s.Inode, peer.Inode, err)
	}
	// Shutdown last: no data can be written once SHUT_WR is applied.
	if err = ApplyShutdown(fd, s.Shutdown); err != nil {
		return fd, peerFD, err
	}
	return fd, peerFD, ApplyShutdown(peerFD, peer.Shutdown)
}

// pairKind checks that s and peer can be rebuilt as one socketpair and says
// how: oneWay when peer is a datagram receiver not connected back, gone when
// s's peer no longer exists.
func pairKind(s, peer *image.UnixSocket) (oneWay, gone bool, err error) {
	if peer == nil {
		if s.Type == unix.SOCK_DGRAM && s.PeerInode == 0 {
			return false, false, errors.New("datagram socket recorded as connected without a peer")
		}
		if s.PeerInode != 0 {
			return false, false, fmt.Errorf("peer socket %d is not in the job; connections to sockets outside the job are not supported", s.PeerInode)
		}
		return false, true, nil
	}
	if peer.Inode != s.PeerInode {
		return false, false, fmt.Errorf("given peer %d, but the socket is connected to %d", peer.Inode, s.PeerInode)
	}
	if peer.Type != s.Type {
		return false, false, fmt.Errorf("peer %d has type %d, socket has %d", peer.Inode, peer.Type, s.Type)
	}
	if peer.PeerInode == s.Inode {
		return false, false, nil
	}
	if s.Type == unix.SOCK_DGRAM && peer.PeerInode == 0 {
		return true, false, nil
	}
	return false, false, fmt.Errorf("peer %d is connected to %d, not back to this socket; this datagram topology is not supported", peer.Inode, peer.PeerInode)
}

// CreatePair returns both ends of a new AF_UNIX socketpair of type sockType
// (close-on-exec, blocking, as the job's sockets were created unless it
// changed them; the engine restores fd flags separately).
func CreatePair(net inject.SocketMaker, sockType int) (int, int, error) {
	fds, err := net.Socketpair(unix.AF_UNIX, sockType, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("socketpair type %d: %w", sockType, err)
	}
	return fds[0], fds[1], nil
}

// CreateListener returns a socket bound to s.Name and listening with
// s.Backlog. A socket file left at the path by the checkpointed job is
// removed first; any other file there is an error, never removed.
func CreateListener(net inject.SocketMaker, s *image.UnixSocket) (int, error) {
	if s.Name == "" {
		return -1, fmt.Errorf("listening unix socket %d has no name", s.Inode)
	}
	fd, err := newSocket(net, s.Type)
	if err != nil {
		return -1, fmt.Errorf("listening unix socket %d: %w", s.Inode, err)
	}
	if err := bindName(fd, s.Name); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listening unix socket %d: %w", s.Inode, err)
	}
	if err := unix.Listen(fd, s.Backlog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listening unix socket %d: listen %s backlog %d: %w", s.Inode, s.Name, s.Backlog, err)
	}
	logrus.Debugf("unix socket %d: listening on %s", s.Inode, s.Name)
	return fd, nil
}

// ConnectPending re-creates client, a socket whose connection to the
// listener named name had not been accepted at checkpoint time, by
// connecting a new socket to the restored listener: the connection waits in
// its backlog again. Data the client had already sent sits in the server
// end that has no descriptor yet and cannot be read without accepting, so a
// caller must refuse a client whose Info.SendQueue is not 0.
func ConnectPending(net inject.SocketMaker, client *image.UnixSocket, name string) (int, error) {
	if len(client.Queue) > 0 {
		return -1, fmt.Errorf("unix socket %d: queued data on a connection not accepted yet is not supported", client.Inode)
	}
	fd, err := newSocket(net, client.Type)
	if err != nil {
		return -1, fmt.Errorf("unix socket %d: %w", client.Inode, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("unix socket %d: connect to %s: %w", client.Inode, name, err)
	}
	if err := ApplyShutdown(fd, client.Shutdown); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// ApplyShutdown applies the recorded SHUT_RD (1) and SHUT_WR (2) bits to fd.
// For stream and seqpacket sockets the kernel also marks the peer, which is
// what the peer's record holds anyway.
func ApplyShutdown(fd int, bits int) error {
	var how int
	switch bits & 3 {
	case 0:
		return nil
	case 1:
		how = unix.SHUT_RD
	case 2:
		how = unix.SHUT_WR
	case 3:
		how = unix.SHUT_RDWR
	}
	if err := unix.Shutdown(fd, how); err != nil {
		return fmt.Errorf("shutdown unix socket fd %d (bits %d): %w", fd, bits, err)
	}
	return nil
}

// refillUnconnected sends the recorded queue of an unconnected datagram
// socket to its name from a throw-away socket. The senders' addresses are
// lost: recvfrom in the job sees the throw-away socket, which is unnamed.
func refillUnconnected(net inject.SocketMaker, s *image.UnixSocket) error {
	if len(s.Queue) == 0 {
		return nil
	}
	if s.Type != unix.SOCK_DGRAM || s.Name == "" {
		return fmt.Errorf("queued data on an unconnected socket of type %d named %q cannot be refilled", s.Type, s.Name)
	}
	tmp, err := newSocket(net, s.Type)
	if err != nil {
		return err
	}
	// Closing the sender leaves its messages queued at the receiver.
	defer unix.Close(tmp)
	return refill(tmp, s.Type, s.Queue, &unix.SockaddrUnix{Name: s.Name}, true)
}

// newSocket returns a new close-on-exec AF_UNIX socket of type sockType.
func newSocket(net inject.SocketMaker, sockType int) (int, error) {
	fd, err := net.Socket(unix.AF_UNIX, sockType, 0)
	if err != nil {
		return -1, fmt.Errorf("socket type %d: %w", sockType, err)
	}
	return fd, nil
}

// bindName binds fd to name ("@x" abstract, a path otherwise), removing a
// stale socket file at the path first.
func bindName(fd int, name string) error {
	if !strings.HasPrefix(name, "@") {
		if err := removeStaleSocket(name); err != nil {
			return err
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		return fmt.Errorf("bind %q: %w", name, err)
	}
	return nil
}

// removeStaleSocket unlinks path if it is a socket file; the job that bound
// it is gone (or is the one being replaced). Anything else is left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("cannot bind unix socket to %s: a file that is not a socket (mode %v) is in the way", path, fi.Mode())
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	logrus.Debugf("removed stale socket file %s", path)
	return nil
}

// disconnect dissolves a datagram socket's association with its peer.
func disconnect(fd int) error {
	var sa unix.RawSockaddrAny
	sa.Addr.Family = unix.AF_UNSPEC
	if err := connectRaw(fd, &sa); err != nil {
		return fmt.Errorf("disconnect fd %d: %w", fd, err)
	}
	return nil
}

// closeFD closes fd unless it is -1.
func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
