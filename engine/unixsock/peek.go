package unixsock

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ErrFDsInFlight is returned when a queued message carries file descriptors
// (SCM_RIGHTS). Restoring them would need the descriptors themselves to be
// dumped and re-created in flight, which the engine does not do.
var ErrFDsInFlight = errors.New("file descriptors in flight over a unix socket are not supported")

// peekChunk is the buffer a datagram peek starts with; larger messages grow it.
const peekChunk = 64 << 10

// oobSize holds the most ancillary data one message can bring: SCM_RIGHTS
// with the kernel's limit of 253 descriptors, credentials and a pidfd. Every
// descriptor must fit, or the kernel drops the rest and we could not close
// what it installed.
var oobSize = unix.CmsgSpace(253*4) + unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4) + 64

// PeekQueue returns what waits in the receive queue of the AF_UNIX socket
// fd without consuming it: one entry per message for SOCK_DGRAM and
// SOCK_SEQPACKET (zero-length messages included), the whole byte stream as
// one entry for SOCK_STREAM. sockType is the socket's SOCK_* type.
//
// fd is normally a copy of a job's descriptor made with pidfd_getfd; the
// queue belongs to the socket, so the job sees it unchanged afterwards.
// SO_PEEK_OFF (and, for seqpacket, SO_PASSCRED) are restored before return.
//
// Precondition: nothing else reads the socket meanwhile (the job is
// ptrace-stopped).
//
// Limits the caller must know: a datagram or seqpacket socket with a pending
// socket error (ECONNRESET after a peer closed with data unread) loses that
// error, because the kernel reports and clears it on the first receive; the
// call then fails and says so. Out-of-band stream data (MSG_OOB) is
// detected by a length mismatch and refused. A zero-length datagram or
// seqpacket message is marked "peeked" by the kernel the first time any
// peek returns it, and from then on a peek at an offset skips it: this call
// sees it (and a job's own earlier plain MSG_PEEK at the head does not hide
// it), but a later PeekQueue of the same, still unread queue misses every
// such message behind the head. The kernel offers no count to check
// against, so that loss is silent.
func PeekQueue(fd int, sockType int) (queue [][]byte, err error) {
	switch sockType {
	case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
	default:
		return nil, fmt.Errorf("peek unix socket fd %d: socket type %d is not supported", fd, sockType)
	}
	oldOff, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("peek unix socket fd %d: get SO_PEEK_OFF: %w", fd, err)
	}
	defer func() {
		if rerr := setPeekOff(fd, oldOff); rerr != nil && err == nil {
			queue, err = nil, fmt.Errorf("peek unix socket fd %d: restore SO_PEEK_OFF %d: %w", fd, oldOff, rerr)
		}
	}()

	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("peek unix socket fd %d: SIOCINQ: %w", fd, err)
	}

	switch sockType {
	case unix.SOCK_STREAM:
		queue, err = peekStream(fd, inq)
	default:
		if sockType == unix.SOCK_SEQPACKET {
			// A non-blocking seqpacket receive returns 0 both for a
			// zero-length message and for an empty queue after
			// shutdown. With SO_PASSCRED every real message brings
			// SCM_CREDENTIALS, which tells the two apart.
			oldCred, cerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED)
			if cerr != nil {
				return nil, fmt.Errorf("peek unix socket fd %d: get SO_PASSCRED: %w", fd, cerr)
			}
			if oldCred == 0 {
				if cerr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); cerr != nil {
					return nil, fmt.Errorf("peek unix socket fd %d: set SO_PASSCRED: %w", fd, cerr)
				}
				defer func() {
					if rerr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 0); rerr != nil && err == nil {
						queue, err = nil, fmt.Errorf("peek unix socket fd %d: restore SO_PASSCRED: %w", fd, rerr)
					}
				}()
			}
		}
		queue, err = peekMessages(fd, sockType, inq)
	}
	if err != nil {
		return nil, fmt.Errorf("peek unix socket fd %d: %w", fd, err)
	}
	logrus.Debugf("peek unix socket fd %d: %d entries, SIOCINQ %d", fd, len(queue), inq)
	return queue, nil
}

// peekStream peeks inq bytes of stream data. It never asks for more than
// inq: a receive on an empty stream queue would report (and clear) a
// pending socket error.
func peekStream(fd, inq int) ([][]byte, error) {
	if inq == 0 {
		return nil, nil
	}
	buf := make([]byte, inq)
	oob := make([]byte, oobSize)
	total := 0
	for total < inq {
		if err := setPeekOff(fd, total); err != nil {
			return nil, fmt.Errorf("set SO_PEEK_OFF %d: %w", total, err)
		}
		n, oobn, rflags, _, err := unix.Recvmsg(fd, buf[total:], oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) || (err == nil && n == 0) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("peek stream data at offset %d: %w", total, err)
		}
		if _, err := checkAncillary(oob[:oobn], rflags); err != nil {
			return nil, err
		}
		total += n
	}
	if total != inq {
		return nil, fmt.Errorf("stream queue holds %d bytes but only %d could be peeked (out-of-band data pending?)", inq, total)
	}
	return [][]byte{buf}, nil
}

// peekMessages peeks every queued datagram or seqpacket message.
//
// The first message is peeked with SO_PEEK_OFF disabled: with an offset of
// 0 the kernel skips a zero-length message that has been peeked before,
// which the job itself may have done. Later messages are peeked at the sum
// of the lengths before them; a zero-length message there is skipped on the
// next peek because our own peek marked it.
func peekMessages(fd, sockType, inq int) ([][]byte, error) {
	var queue [][]byte
	buf := make([]byte, peekChunk)
	oob := make([]byte, oobSize)
	total := 0
	for {
		off := total
		if len(queue) == 0 {
			off = -1
		}
		msg, ok, err := peekOne(fd, sockType, off, &buf, oob)
		if err != nil {
			return nil, fmt.Errorf("peek message %d at offset %d: %w", len(queue), total, err)
		}
		if !ok {
			break
		}
		queue = append(queue, msg)
		total += len(msg)
	}
	// SIOCINQ counts every queued byte of a seqpacket socket but only the
	// first message of a datagram socket.
	want := total
	if sockType == unix.SOCK_DGRAM {
		want = 0
		if len(queue) > 0 {
			want = len(queue[0])
		}
	}
	if want != inq {
		return nil, fmt.Errorf("peeked %d messages (%d bytes) but SIOCINQ reports %d", len(queue), total, inq)
	}
	return queue, nil
}

// peekOne peeks the message at peek offset off (-1: the queue head). ok is
// false when the queue has no more messages.
func peekOne(fd, sockType, off int, buf *[]byte, oob []byte) (msg []byte, ok bool, err error) {
	for {
		if err := setPeekOff(fd, off); err != nil {
			return nil, false, fmt.Errorf("set SO_PEEK_OFF %d: %w", off, err)
		}
		// MSG_TRUNC makes the kernel return the message's full length,
		// so a message larger than buf is seen and peeked again.
		n, oobn, rflags, _, err := unix.Recvmsg(fd, *buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_TRUNC|unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("pending socket error %w reported by the kernel (now cleared; pending unix socket errors are not supported)", err)
		}
		creds, err := checkAncillary(oob[:oobn], rflags)
		if err != nil {
			return nil, false, err
		}
		if n == 0 && sockType == unix.SOCK_SEQPACKET && !creds {
			return nil, false, nil // end of queue after shutdown
		}
		if n > len(*buf) {
			*buf = make([]byte, n)
			continue
		}
		return append([]byte{}, (*buf)[:n]...), true, nil
	}
}

// checkAncillary closes every descriptor a peek installed in this process
// and fails if the message carried SCM_RIGHTS. creds reports whether
// SCM_CREDENTIALS came with it.
func checkAncillary(oob []byte, rflags int) (creds bool, err error) {
	if rflags&unix.MSG_CTRUNC != 0 {
		err = fmt.Errorf("ancillary data truncated (more than 253 descriptors?): %w", ErrFDsInFlight)
	}
	if len(oob) == 0 {
		return false, err
	}
	msgs, perr := unix.ParseSocketControlMessage(oob)
	if perr != nil {
		return false, fmt.Errorf("parse ancillary data: %w", perr)
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_RIGHTS:
			fds, _ := unix.ParseUnixRights(m)
			for _, f := range fds {
				unix.Close(f)
			}
			if err == nil {
				err = fmt.Errorf("message carries %d descriptors: %w", len(fds), ErrFDsInFlight)
			}
		case unix.SCM_PIDFD:
			// SO_PASSPIDFD makes every receive install a pidfd of the
			// sender; it is ours to close, and the job gets its own.
			if len(m.Data) >= 4 {
				unix.Close(int(int32(binary.NativeEndian.Uint32(m.Data))))
			}
		case unix.SCM_CREDENTIALS:
			creds = true
		}
	}
	return creds, err
}

// setPeekOff sets SO_PEEK_OFF, retrying when a signal interrupts the wait
// for the socket's receive lock.
func setPeekOff(fd, off int) error {
	for {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
