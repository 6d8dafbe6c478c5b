package inetsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// Finisher re-creates a job's TCP and UDP sockets (Create) and, once all of
// them exist, completes what involves more than one (Finish). It keeps its
// own descriptor of each socket until then.
type Finisher struct {
	made []made
	// net makes the throw-away senders of UDP datagrams whose sender is
	// not in the job.
	net inject.SocketMaker
}

// made is one socket Create made, with what Finish still has to do to it.
type made struct {
	fd int
	s  *image.InetSocket
}

// connectTimeout bounds a waiting client's connect to its restored
// listener, over the job's loopback.
const connectTimeout = 5 * time.Second

// Create makes socket s again in the network namespace net makes sockets
// in and returns the supervisor's descriptor of it, which the caller hands
// to the process and closes. A connection is left in repair mode, a waiting
// client unconnected, a UDP queue empty, until Finish.
func (f *Finisher) Create(net inject.SocketMaker, s *image.InetSocket) (fd int, err error) {
	proto := unix.IPPROTO_TCP
	if s.Type == unix.SOCK_DGRAM {
		proto = unix.IPPROTO_UDP
	}
	if fd, err = net.Socket(s.Family, s.Type, proto); err != nil {
		return -1, err
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}()
	if f.net == nil {
		f.net = net
	}
	keep := false
	switch {
	case s.Type == unix.SOCK_DGRAM:
		err = createUDP(fd, s)
		// Bound ones may be the senders of queued datagrams.
		keep = len(s.Datagrams) > 0 || s.Local != ""
	case s.State == image.InetListen:
		err = createListener(fd, s)
	case s.State == image.InetUnconnected:
		err = createUnconnected(fd, s)
	case s.State == image.InetPending:
		err = applyOptions(fd, s.Type, s.Family, s.Options)
		keep = true
	case s.TCP != nil:
		err = createConn(fd, s)
		keep = true
	default:
		err = fmt.Errorf("TCP socket in state %q", s.State)
	}
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		err = fmt.Errorf("%w: the job's network here lacks the address; one a user-mode network stack gives (10.0.2.100) needs pasta or slirp4netns installed on this node too", err)
	}
	if err != nil {
		return -1, fmt.Errorf("%s socket %s: %w", kindName(s), describe(s), err)
	}
	if keep {
		own, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		f.made = append(f.made, made{fd: own, s: s})
	}
	return fd, nil
}

// bindForced binds fd to addr whatever else holds the port: repair mode
// makes the kernel skip the bind conflict check (sk_reuse becomes
// SK_FORCE_REUSE), as the restored connections that share a listener's
// port need. Leaving repair mode resets the socket's own reuse setting.
func bindForced(fd int, family int, addr string) error {
	sa, err := sockaddr(family, addr)
	if err != nil {
		return err
	}
	if err := repair(fd, unix.TCP_REPAIR_ON); err != nil {
		return err
	}
	if err := unix.Bind(fd, sa); err != nil {
		repair(fd, unix.TCP_REPAIR_OFF_NO_WP)
		return fmt.Errorf("bind %s: %w", addr, err)
	}
	return repair(fd, unix.TCP_REPAIR_OFF_NO_WP)
}

func createUnconnected(fd int, s *image.InetSocket) error {
	if err := applyOptions(fd, s.Type, s.Family, s.Options); err != nil {
		return err
	}
	if s.Local == "" {
		return nil
	}
	if err := bindForced(fd, s.Family, s.Local); err != nil {
		return err
	}
	// Leaving repair mode cleared it.
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, s.Options["SO_REUSEADDR"])
}

// createListener binds and listens. listen checks the port once more, now
// against the connections already restored on it: with SO_REUSEADDR on
// for that moment, as the listener the job's connections came from had it
// before them.
func createListener(fd int, s *image.InetSocket) error {
	if err := applyOptions(fd, s.Type, s.Family, s.Options, "SO_REUSEADDR"); err != nil {
		return err
	}
	if err := bindForced(fd, s.Family, s.Local); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return err
	}
	if err := unix.Listen(fd, s.Backlog); err != nil {
		return fmt.Errorf("listen on %s, backlog %d: %w", s.Local, s.Backlog, err)
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, s.Options["SO_REUSEADDR"])
}

// createConn rebuilds a connection in repair mode, in the order the kernel
// takes it: sequence numbers before connect (which then only sets the
// state, without a handshake), the negotiated options on the connected
// socket, the queues (their data moves the sequence numbers on to the
// recorded ones), the windows last.
func createConn(fd int, s *image.InetSocket) error {
	c := s.TCP
	if err := applyOptions(fd, s.Type, s.Family, s.Options, "SO_REUSEADDR"); err != nil {
		return err
	}
	if err := repair(fd, unix.TCP_REPAIR_ON); err != nil {
		return err
	}
	sent := c.SendQueue[:len(c.SendQueue)-c.Unsent]
	sendSeq, recvSeq := c.SendSeq-uint32(len(c.SendQueue)), c.RecvSeq-uint32(len(c.RecvQueue))
	// A FIN sent or received is in the sequence numbers; it is sent
	// again at Finish, by shutdown on this end or its peer.
	switch s.State {
	case image.InetFinWait2:
		sendSeq--
	case image.InetCloseWait:
		recvSeq--
	}
	for _, q := range []struct {
		queue int
		seq   uint32
	}{{tcpSendQueue, sendSeq}, {tcpRecvQueue, recvSeq}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.queue); err != nil {
			return fmt.Errorf("TCP_REPAIR_QUEUE %d: %w", q.queue, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(int32(q.seq))); err != nil {
			return fmt.Errorf("TCP_QUEUE_SEQ %d: %w", q.seq, err)
		}
	}
	local, err := sockaddr(s.Family, s.Local)
	if err != nil {
		return err
	}
	peer, err := sockaddr(s.Family, s.Peer)
	if err != nil {
		return err
	}
	if err := unix.Bind(fd, local); err != nil {
		return fmt.Errorf("bind %s: %w", s.Local, err)
	}
	if err := unix.Connect(fd, peer); err != nil {
		return fmt.Errorf("connect to %s in repair mode: %w", s.Peer, err)
	}
	if err := setRepairOptions(fd, c); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		return err
	}
	if err := sendAll(fd, c.RecvQueue); err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return err
	}
	if err := sendAll(fd, sent); err != nil {
		return fmt.Errorf("send queue: %w", err)
	}
	window := c.Window
	if s.State == image.InetCloseWait && window[4] == c.RecvSeq {
		// rcv_wup may not be past rcv_nxt, which stops short of the
		// FIN until the peer sends it again.
		window[4]--
	}
	win := make([]byte, 20)
	for i, v := range window {
		binary.NativeEndian.PutUint32(win[4*i:], v)
	}
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, string(win)); err != nil {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
	}
	return nil
}

// tcpRepairOpt is struct tcp_repair_opt.
type tcpRepairOpt struct{ code, val uint32 }

// setRepairOptions sets what the handshake negotiated.
func setRepairOptions(fd int, c *image.TCPConn) error {
	opts := []tcpRepairOpt{{unix.TCPOPT_MAXSEG, uint32(c.MSS)}}
	if c.WScale {
		opts = append(opts, tcpRepairOpt{unix.TCPOPT_WINDOW, uint32(c.SendWScale) | uint32(c.RecvWScale)<<16})
	}
	if c.SACK {
		opts = append(opts, tcpRepairOpt{unix.TCPOPT_SACK_PERMITTED, 0})
	}
	if c.Timestamps {
		opts = append(opts, tcpRepairOpt{unix.TCPOPT_TIMESTAMP, 0})
	}
	b := make([]byte, 8*len(opts))
	for i, o := range opts {
		binary.NativeEndian.PutUint32(b[8*i:], o.code)
		binary.NativeEndian.PutUint32(b[8*i+4:], o.val)
	}
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, string(b)); err != nil {
		return fmt.Errorf("TCP_REPAIR_OPTIONS: %w", err)
	}
	if c.Timestamps {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(int32(c.TSVal))); err != nil {
			return fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
	}
	return nil
}

// sendAll writes b on fd, which takes it into the queue repair mode
// selected (or sends it, out of repair mode), waiting for room when the
// socket has none at the moment.
func sendAll(fd int, b []byte) error {
	deadline := time.Now().Add(connectTimeout)
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if errors.Is(err, unix.EAGAIN) && time.Now().Before(deadline) {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			unix.Poll(pfd, 100)
			continue
		}
		if err != nil {
			return fmt.Errorf("write %d bytes: %w", len(b), err)
		}
		b = b[n:]
	}
	return nil
}

func createUDP(fd int, s *image.InetSocket) error {
	if err := applyOptions(fd, s.Type, s.Family, s.Options); err != nil {
		return err
	}
	if s.Local != "" {
		sa, err := sockaddr(s.Family, s.Local)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, sa); err != nil {
			return fmt.Errorf("bind %s: %w", s.Local, err)
		}
	}
	if s.Peer != "" {
		sa, err := sockaddr(s.Family, s.Peer)
		if err != nil {
			return err
		}
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect to %s: %w", s.Peer, err)
		}
	}
	return nil
}

func kindName(s *image.InetSocket) string {
	if s.Type == unix.SOCK_DGRAM {
		return "UDP"
	}
	return "TCP"
}

func describe(s *image.InetSocket) string {
	switch {
	case s.Peer != "":
		return s.Local + " -> " + s.Peer
	case s.Local != "":
		return s.Local
	}
	return "(unbound)"
}
