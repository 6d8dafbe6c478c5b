package inetsock

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// Dump records the TCP or UDP socket behind fd, the supervisor's copy of
// a descriptor of the stopped job. It reads queues without consuming them:
// the job goes on with its sockets as they were.
func Dump(fd int) (*image.InetSocket, error) {
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("SO_DOMAIN: %w", err)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("SO_TYPE: %w", err)
	}
	proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return nil, fmt.Errorf("SO_PROTOCOL: %w", err)
	}
	switch {
	case family != unix.AF_INET && family != unix.AF_INET6:
		return nil, fmt.Errorf("address family %d is not IPv4 or IPv6", family)
	case typ == unix.SOCK_STREAM && proto == unix.IPPROTO_TCP, typ == unix.SOCK_DGRAM && proto == unix.IPPROTO_UDP:
	default:
		return nil, fmt.Errorf("socket type %d protocol %d: only TCP and UDP sockets are supported", typ, proto)
	}
	s := &image.InetSocket{Family: family, Type: typ}
	if sa, err := unix.Getsockname(fd); err == nil {
		s.Local = addrString(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		s.Peer = addrString(sa)
	}
	if s.Options, err = readOptions(fd, typ, family); err != nil {
		return nil, err
	}
	if typ == unix.SOCK_DGRAM {
		return s, dumpUDP(fd, s)
	}
	return s, dumpTCP(fd, s)
}
