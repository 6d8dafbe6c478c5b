package unixsock

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// skbOverhead is a generous estimate of what the kernel charges a sender per
// queued message beyond the data itself (struct sk_buff, shared info and
// allocation rounding). Queued messages stay charged to the sender's
// SO_SNDBUF until read, so the buffer is sized from it.
const skbOverhead = 1024

// Refill writes queue into the AF_UNIX socket fd so that it lands in the
// receive queue of fd's peer: each entry as one message for SOCK_DGRAM and
// SOCK_SEQPACKET, all entries as one byte stream for SOCK_STREAM. fd must be
// connected (normally one end of a fresh socketpair whose other end takes
// the recorded socket's place).
//
// Nothing blocks: when the data does not fit, Refill fails and says which
// limit stopped it. SO_SNDBUF is raised for the writes (SO_SNDBUFFORCE when
// the caller may, else up to net.core.wmem_max) and set back afterwards;
// the data already queued stays.
func Refill(fd int, sockType int, queue [][]byte) error {
	return refill(fd, sockType, queue, nil, false)
}

// refill is Refill with an optional destination, for a datagram receiver
// that is not connected to anyone and is reached by its name. oneWay says
// the receiver is not connected back to fd, so the kernel also limits how
// many messages may wait in its queue.
func refill(fd int, sockType int, queue [][]byte, to unix.Sockaddr, oneWay bool) error {
	if len(queue) == 0 {
		return nil
	}
	if oneWay {
		if qlen, err := maxDgramQlen(); err == nil && len(queue) > qlen+1 {
			return fmt.Errorf("refill unix socket fd %d: %d queued datagrams exceed net.unix.max_dgram_qlen+1 = %d for a receiver not connected back", fd, len(queue), qlen+1)
		}
	}
	switch sockType {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return fmt.Errorf("refill unix socket fd %d: socket type %d is not supported", fd, sockType)
	}
	total, largest := 0, 0
	for _, m := range queue {
		total += len(m)
		largest = max(largest, len(m))
	}
	// Large writes are split into page-sized fragments, whose rounding
	// the eighth on top covers.
	need := total + total/8 + len(queue)*skbOverhead + 64<<10
	if sockType != unix.SOCK_STREAM {
		// A datagram larger than SO_SNDBUF-32 is refused with EMSGSIZE.
		need = max(need, largest+32+skbOverhead)
	}

	oldBuf, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return fmt.Errorf("refill unix socket fd %d: get SO_SNDBUF: %w", fd, err)
	}
	sndbuf := oldBuf
	if oldBuf < need {
		if sndbuf, err = raiseSndbuf(fd, need); err != nil {
			return fmt.Errorf("refill unix socket fd %d: %w", fd, err)
		}
		defer func() {
			// The kernel doubles what it is given; halve to get
			// the old value back.
			if rerr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, oldBuf/2); rerr != nil {
				logrus.Debugf("refill unix socket fd %d: restore SO_SNDBUF %d: %v", fd, oldBuf, rerr)
			}
		}()
	}

	const flags = unix.MSG_DONTWAIT | unix.MSG_NOSIGNAL
	if sockType == unix.SOCK_STREAM {
		sent := 0
		for _, m := range queue {
			for len(m) > 0 {
				n, err := unix.SendmsgN(fd, m, nil, to, flags)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if errors.Is(err, unix.EAGAIN) {
					return fmt.Errorf("refill unix socket fd %d: %d of %d stream bytes fit before the send buffer (%d bytes) filled up; raise net.core.wmem_max", fd, sent, total, sndbuf)
				}
				if err != nil {
					return fmt.Errorf("refill unix socket fd %d: write stream data at offset %d: %w", fd, sent, err)
				}
				m = m[n:]
				sent += n
			}
		}
		logrus.Debugf("refill unix socket fd %d: %d stream bytes", fd, total)
		return nil
	}

	for i, m := range queue {
		var n int
		var err error
		for {
			n, err = unix.SendmsgN(fd, m, nil, to, flags)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		switch {
		case errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("refill unix socket fd %d: message %d of %d does not fit (send buffer %d bytes, %d bytes queued in all; net.unix.max_dgram_qlen %s)",
				fd, i, len(queue), sndbuf, total, qlenString())
		case errors.Is(err, unix.EMSGSIZE):
			return fmt.Errorf("refill unix socket fd %d: message %d is %d bytes, larger than the send buffer (%d bytes) allows; raise net.core.wmem_max", fd, i, len(m), sndbuf)
		case err != nil:
			return fmt.Errorf("refill unix socket fd %d: send message %d (%d bytes): %w", fd, i, len(m), err)
		case n != len(m):
			return fmt.Errorf("refill unix socket fd %d: message %d sent %d of %d bytes", fd, i, n, len(m))
		}
	}
	logrus.Debugf("refill unix socket fd %d: %d messages, %d bytes", fd, len(queue), total)
	return nil
}

// raiseSndbuf asks for a send buffer of at least need bytes and returns what
// the kernel granted. SO_SNDBUFFORCE needs CAP_NET_ADMIN over the network
// namespace; without it SO_SNDBUF is capped by net.core.wmem_max.
func raiseSndbuf(fd, need int) (int, error) {
	// Both options store twice the value given.
	half := (need + 1) / 2
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, half); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, half); err != nil {
			return 0, fmt.Errorf("set SO_SNDBUF %d: %w", need, err)
		}
	}
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return 0, fmt.Errorf("get SO_SNDBUF: %w", err)
	}
	if got < need {
		logrus.Debugf("unix socket fd %d: send buffer %d bytes, wanted %d (net.core.wmem_max caps it)", fd, got, need)
	}
	return got, nil
}

// maxDgramQlen reads net.unix.max_dgram_qlen of the caller's network
// namespace. A datagram socket takes its value when created; a receiver not
// connected back to its sender holds one message more than it before
// senders get EAGAIN.
func maxDgramQlen() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/unix/max_dgram_qlen")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// qlenString is maxDgramQlen for error messages.
func qlenString() string {
	n, err := maxDgramQlen()
	if err != nil {
		return "unknown"
	}
	return strconv.Itoa(n)
}
