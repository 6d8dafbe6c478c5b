package inetsock

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// dumpUDP records a UDP socket's state and the datagrams in its queue.
func dumpUDP(fd int, s *image.InetSocket) error {
	s.State = image.InetUnconnected
	if s.Peer != "" {
		s.State = image.InetConnected
	}
	var err error
	s.Datagrams, err = peekDatagrams(fd)
	return err
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 65535

// peekDatagrams reads every datagram queued on fd without taking it out:
// SO_PEEK_OFF moves each MSG_PEEK on past the datagram it read. The
// socket's own peek offset (-1 unless the job set one) is put back.
func peekDatagrams(fd int) ([]image.Datagram, error) {
	old, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	var out []image.Datagram
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("peek datagram %d: %w", len(out)+1, err)
		}
		if n == 0 {
			// SO_PEEK_OFF cannot step over an empty datagram: the
			// next peek would read it again.
			return nil, fmt.Errorf("an empty datagram waits in the queue: not supported")
		}
		out = append(out, image.Datagram{From: addrString(from), Data: append([]byte(nil), buf[:n]...)})
	}
}
