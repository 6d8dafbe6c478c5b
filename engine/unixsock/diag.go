package unixsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// Values of <linux/unix_diag.h>; golang.org/x/sys/unix does not carry them.
// The kernel adds UNIX_DIAG_SHUTDOWN to every reply without being asked, so
// there is no "show" bit for it.
const (
	udiagShowName  = 0x01
	udiagShowPeer  = 0x04
	udiagShowIcons = 0x08
	udiagShowRqlen = 0x10

	unixDiagName     = 0
	unixDiagPeer     = 2
	unixDiagIcons    = 3
	unixDiagRqlen    = 4
	unixDiagShutdown = 6

	// sizeofUnixDiagReq and sizeofUnixDiagMsg are the sizes of struct
	// unix_diag_req and struct unix_diag_msg.
	sizeofUnixDiagReq = 24
	sizeofUnixDiagMsg = 16

	// nlaTypeMask strips the nested and byte-order flags off an
	// attribute type.
	nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

// Socket states as the kernel reports them for AF_UNIX (the TCP_* numbers of
// <net/tcp_states.h>, reused by af_unix).
const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

// State strings stored in image.UnixSocket.State.
const (
	StateListen      = "listen"
	StateConnected   = "connected"
	StateUnconnected = "unconnected"
)

// Info is what Diag learns about a socket beyond image.UnixSocket.
type Info struct {
	// RecvQueue is the kernel's receive queue length: bytes queued for a
	// stream or seqpacket socket, the size of the first datagram for a
	// datagram socket, the number of pending connections for a listener.
	RecvQueue uint32
	// SendQueue is, for a listener, its backlog; otherwise the bytes this
	// socket has sent that its peer has not read yet.
	SendQueue uint32
	// Pending lists, for a listener, the inodes of the connecting sockets
	// whose connections wait to be accepted, in accept order. The kernel
	// reports the client end: the server end of an unaccepted connection
	// has no inode yet.
	Pending []uint64
	// PendingOn is, for a client whose connection waits in a listener's
	// backlog, that listener's inode. Such a client shows PeerInode 0,
	// like one whose peer is gone; this tells the two apart.
	PendingOn uint64
}

// Diag lists every AF_UNIX socket of the caller's network namespace with one
// NETLINK_SOCK_DIAG dump, keyed by socket inode (the number /proc/<pid>/fd
// shows as socket:[N]). Queue is left empty; PeekQueue fills it. PeerName is
// filled from the peer's entry when the peer is in the same namespace. A
// datagram socket without a peer of its own is reported "unconnected" even
// where the kernel says established (because another socket connected to
// it). Paths are as bound: relative to the binder's cwd, in its mount
// namespace.
func Diag(net inject.SocketMaker) (map[uint64]*image.UnixSocket, map[uint64]Info, error) {
	fd, err := net.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, nil, fmt.Errorf("unix diag: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, nil, fmt.Errorf("unix diag: bind netlink socket: %w", err)
	}

	const seq = 1
	req := make([]byte, unix.SizeofNlMsghdr+sizeofUnixDiagReq)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	r := req[unix.SizeofNlMsghdr:]
	r[0] = unix.AF_UNIX
	ne.PutUint32(r[4:], ^uint32(0)) // every state
	ne.PutUint32(r[12:], udiagShowName|udiagShowPeer|udiagShowIcons|udiagShowRqlen)
	// The cookie stays 0: a dump ignores it.
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, nil, fmt.Errorf("unix diag: send request: %w", err)
	}

	socks := make(map[uint64]*image.UnixSocket)
	infos := make(map[uint64]Info)
	buf := make([]byte, 64<<10)
	for {
		// Peek with MSG_TRUNC first so a datagram larger than buf (a
		// listener with a long ICONS list) grows buf instead of being cut.
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_TRUNC)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, nil, fmt.Errorf("unix diag: receive: %w", err)
		}
		if n > len(buf) {
			buf = make([]byte, n)
		}
		n, _, err = unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("unix diag: receive: %w", err)
		}
		msgs, err := splitNetlink(buf[:n])
		if err != nil {
			return nil, nil, fmt.Errorf("unix diag: parse reply: %w", err)
		}
		for _, m := range msgs {
			if m.seq != seq {
				continue
			}
			switch m.typ {
			case unix.NLMSG_DONE:
				fillPeerNames(socks, infos)
				logrus.Debugf("unix diag: %d sockets", len(socks))
				return socks, infos, nil
			case unix.NLMSG_ERROR:
				if len(m.data) >= 4 {
					if errno := int32(ne.Uint32(m.data)); errno != 0 {
						return nil, nil, fmt.Errorf("unix diag: kernel: %w", unix.Errno(-errno))
					}
				}
				continue
			case unix.SOCK_DIAG_BY_FAMILY:
			default:
				continue
			}
			s, info, err := parseDiagMsg(m.data)
			if err != nil {
				return nil, nil, fmt.Errorf("unix diag: %w", err)
			}
			socks[s.Inode] = s
			infos[s.Inode] = info
		}
	}
}

// nlMsg is one netlink message of a reply.
type nlMsg struct {
	typ  uint16
	seq  uint32
	data []byte
}

// splitNetlink cuts a netlink datagram into its messages.
func splitNetlink(b []byte) ([]nlMsg, error) {
	ne := binary.NativeEndian
	var msgs []nlMsg
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(ne.Uint32(b[0:]))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return nil, fmt.Errorf("bad netlink message length %d", l)
		}
		msgs = append(msgs, nlMsg{
			typ:  ne.Uint16(b[4:]),
			seq:  ne.Uint32(b[8:]),
			data: b[unix.SizeofNlMsghdr:l],
		})
		next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return msgs, nil
}

// parseDiagMsg decodes one struct unix_diag_msg and its attributes.
func parseDiagMsg(b []byte) (*image.UnixSocket, Info, error) {
	var info Info
	if len(b) < sizeofUnixDiagMsg {
		return nil, info, fmt.Errorf("short unix_diag_msg (%d bytes)", len(b))
	}
	ne := binary.NativeEndian
	s := &image.UnixSocket{
		Type:  int(b[1]),
		Inode: uint64(ne.Uint32(b[4:])),
	}
	kstate := b[2]
	switch kstate {
	case tcpListen:
		s.State = StateListen
	case tcpEstablished:
		s.State = StateConnected
	case tcpClose:
		s.State = StateUnconnected
	default:
		return nil, info, fmt.Errorf("socket %d: unknown unix socket state %d", s.Inode, kstate)
	}

	attrs := b[sizeofUnixDiagMsg:]
	for len(attrs) >= unix.SizeofRtAttr {
		alen := int(ne.Uint16(attrs[0:]))
		atype := ne.Uint16(attrs[2:]) & nlaTypeMask
		if alen < unix.SizeofRtAttr || alen > len(attrs) {
			return nil, info, fmt.Errorf("socket %d: bad attribute length %d", s.Inode, alen)
		}
		data := attrs[unix.SizeofRtAttr:alen]
		switch atype {
		case unixDiagName:
			s.Name = decodeName(data)
		case unixDiagPeer:
			if len(data) >= 4 {
				s.PeerInode = uint64(ne.Uint32(data))
			}
		case unixDiagIcons:
			for i := 0; i+4 <= len(data); i += 4 {
				info.Pending = append(info.Pending, uint64(ne.Uint32(data[i:])))
			}
		case unixDiagRqlen:
			if len(data) >= 8 {
				info.RecvQueue = ne.Uint32(data[0:])
				info.SendQueue = ne.Uint32(data[4:])
			}
		case unixDiagShutdown:
			if len(data) >= 1 {
				s.Shutdown = int(data[0])
			}
		}
		next := (alen + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if next > len(attrs) {
			break
		}
		attrs = attrs[next:]
	}
	if s.State == StateListen {
		s.Backlog = int(info.SendQueue)
	}
	// The kernel marks a datagram socket established when it connects
	// and also when another socket connects to it. Without a peer of its
	// own (never had one, or the peer is closed and has no inode left) it
	// behaves as unconnected: it receives from anyone and sends only with
	// an address.
	if s.Type == unix.SOCK_DGRAM && s.PeerInode == 0 {
		s.State = StateUnconnected
	}
	return s, info, nil
}

// decodeName turns the sun_path bytes the kernel reports into the image
// form: "@" plus the raw bytes for an abstract name (it may hold NULs), the
// path without its terminating NUL otherwise.
func decodeName(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if b[0] == 0 {
		return "@" + string(b[1:])
	}
	return strings.TrimRight(string(b), "\x00")
}

// fillPeerNames sets PeerName from the peer's bound name, which is what
// getpeername returns (an accepted socket carries its listener's name, and
// so does the not yet accepted end of a pending connection), and links
// pending clients to their listener.
func fillPeerNames(socks map[uint64]*image.UnixSocket, infos map[uint64]Info) {
	for _, s := range socks {
		if p, ok := socks[s.PeerInode]; ok && s.PeerInode != 0 {
			s.PeerName = p.Name
		}
		if s.State != StateListen {
			continue
		}
		for _, c := range infos[s.Inode].Pending {
			if cs, ok := socks[c]; ok && c != 0 {
				cs.PeerName = s.Name
				ci := infos[c]
				ci.PendingOn = s.Inode
				infos[c] = ci
			}
		}
	}
}

// Inode returns the socket inode of fd, the key Diag uses.
func Inode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("fstat fd %d: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return 0, fmt.Errorf("fd %d is not a socket (mode %#o)", fd, st.Mode)
	}
	return st.Ino, nil
}
