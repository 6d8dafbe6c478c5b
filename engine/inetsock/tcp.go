package inetsock

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// TCP states as TCP_INFO's tcpi_state gives them (include/net/tcp_states.h).
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpSynRecv     = 3
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpTimeWait    = 6
	tcpClose       = 7
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpListen      = 10
	tcpClosing     = 11
)

var tcpStateNames = map[int]string{
	tcpEstablished: "ESTABLISHED", tcpSynSent: "SYN_SENT", tcpSynRecv: "SYN_RECV",
	tcpFinWait1: "FIN_WAIT1", tcpFinWait2: "FIN_WAIT2", tcpTimeWait: "TIME_WAIT",
	tcpClose: "CLOSE", tcpCloseWait: "CLOSE_WAIT", tcpLastAck: "LAST_ACK",
	tcpListen: "LISTEN", tcpClosing: "CLOSING",
}

// Queues TCP_REPAIR_QUEUE selects (include/uapi/linux/tcp.h).
const (
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// tcpi_options bits.
const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
	tcpiOptWScale     = 4
)

// tcpInfo is what the checkpoint reads of struct tcp_info: the fields
// x/sys's TCPInfo has, and the window scales it leaves out (a byte of two
// 4-bit fields after tcpi_options).
type tcpInfo struct {
	*unix.TCPInfo
	sendWScale, recvWScale int
}

func readTCPInfo(fd int) (*tcpInfo, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, fmt.Errorf("TCP_INFO: %w", err)
	}
	raw, err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, 8)
	if err != nil || len(raw) < 8 {
		return nil, fmt.Errorf("TCP_INFO: %v", err)
	}
	return &tcpInfo{TCPInfo: info, sendWScale: int(raw[6] & 0xf), recvWScale: int(raw[6] >> 4)}, nil
}

// ErrNeedsOwnNetwork is returned when TCP_REPAIR is refused: the socket is
// in a network namespace the supervisor has no CAP_NET_ADMIN over, the
// node's own.
var ErrNeedsOwnNetwork = errors.New("TCP connections of a job are checkpointed only in a network namespace of the job's own: launch it with --net private")

// dumpTCP records TCP socket fd (family, addresses and options already in
// s) by its state.
func dumpTCP(fd int, s *image.InetSocket) error {
	info, err := readTCPInfo(fd)
	if err != nil {
		return err
	}
	state := int(info.State)
	switch state {
	case tcpListen:
		s.State = image.InetListen
		// For a listener tcpi_sacked is the backlog listen() was given.
		s.Backlog = int(info.Sacked)
		s.Waiting = int(info.Unacked)
		return nil
	case tcpClose:
		// Never connected, or a connection that ended: either way
		// nothing but the bound address is left.
		s.State, s.Peer = image.InetUnconnected, ""
		return nil
	case tcpEstablished:
		s.State = image.InetEstablished
	case tcpFinWait2:
		s.State = image.InetFinWait2
	case tcpCloseWait:
		s.State = image.InetCloseWait
	default:
		return fmt.Errorf("TCP connection %s -> %s is in state %s, between two steps of its opening or closing: not supported; checkpoint again in a moment",
			s.Local, s.Peer, tcpStateNames[state])
	}
	if err := repair(fd, unix.TCP_REPAIR_ON); err != nil {
		return err
	}
	c, err := readConn(fd, info)
	// Without a window probe: the peer, in the job, is stopped as well,
	// and nothing changed for it.
	if offErr := repair(fd, unix.TCP_REPAIR_OFF_NO_WP); offErr != nil && err == nil {
		err = offErr
	}
	if err != nil {
		return fmt.Errorf("TCP connection %s -> %s: %w", s.Local, s.Peer, err)
	}
	// The SYN counts as one acknowledged byte, a FIN as another.
	c.Delivered = info.Bytes_acked - 1
	if state == tcpFinWait2 {
		c.Delivered--
	}
	s.TCP = c
	return nil
}

// repair turns TCP_REPAIR on or off.
func repair(fd, val int) error {
	err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, val)
	if val == unix.TCP_REPAIR_OFF_NO_WP && errors.Is(err, unix.EINVAL) {
		// Before 4.15 leaving repair mode always sends a window probe.
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF)
	}
	if errors.Is(err, unix.EPERM) {
		return ErrNeedsOwnNetwork
	}
	if err != nil {
		return fmt.Errorf("TCP_REPAIR %d: %w", val, err)
	}
	return nil
}

// readConn reads the repair state of connected socket fd, in repair mode.
func readConn(fd int, info *tcpInfo) (*image.TCPConn, error) {
	c := &image.TCPConn{
		SendWScale: info.sendWScale, RecvWScale: info.recvWScale,
		WScale:     info.Options&tcpiOptWScale != 0,
		SACK:       info.Options&tcpiOptSACK != 0,
		Timestamps: info.Options&tcpiOptTimestamps != 0,
	}
	var err error
	if c.MSS, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG); err != nil {
		return nil, fmt.Errorf("TCP_MAXSEG: %w", err)
	}
	if c.Timestamps {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return nil, fmt.Errorf("TCP_TIMESTAMP: %w", err)
		}
		c.TSVal = uint32(ts)
	}
	win, err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, 20)
	if err != nil || len(win) != 20 {
		return nil, fmt.Errorf("TCP_REPAIR_WINDOW: %v (%d bytes)", err, len(win))
	}
	for i := range c.Window {
		c.Window[i] = binary.NativeEndian.Uint32(win[4*i:])
	}
	for _, q := range []struct {
		queue int
		seq   *uint32
		data  *[]byte
		size  uint
	}{
		{tcpSendQueue, &c.SendSeq, &c.SendQueue, unix.SIOCOUTQ},
		{tcpRecvQueue, &c.RecvSeq, &c.RecvQueue, unix.SIOCINQ},
	} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.queue); err != nil {
			return nil, fmt.Errorf("TCP_REPAIR_QUEUE %d: %w", q.queue, err)
		}
		seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
		if err != nil {
			return nil, fmt.Errorf("TCP_QUEUE_SEQ of queue %d: %w", q.queue, err)
		}
		*q.seq = uint32(seq)
		n, err := unix.IoctlGetInt(fd, q.size)
		if err != nil {
			return nil, fmt.Errorf("queue %d size: %w", q.queue, err)
		}
		if *q.data, err = peekAll(fd, n); err != nil {
			return nil, fmt.Errorf("queue %d: %w", q.queue, err)
		}
	}
	unsent, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return nil, fmt.Errorf("SIOCOUTQNSD: %w", err)
	}
	c.Unsent = unsent
	return c, nil
}

// peekAll reads the n bytes of the selected repair queue without taking
// them out of it.
func peekAll(fd, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, n+1)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, fmt.Errorf("peek %d bytes: %w", n, err)
	}
	if got != n {
		return nil, fmt.Errorf("peek %d bytes: got %d", n, got)
	}
	return buf[:n], nil
}
