package inject

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// Descriptors move between the supervisor and the job's stopped processes:
// a checkpoint reads a socket's queue through a copy of its descriptor, a
// restore fills pipes and memfds through one, and hands open file
// descriptions from one process to another. pidfd_getfd (5.6) copies a
// descriptor out of a process directly; on older kernels the process sends
// it with SCM_RIGHTS over a unix socket, in injected calls. Either way the
// copy shares the open file description (offset, status flags).

// PullFD copies descriptor fd of the process into the supervisor. The
// caller closes the result.
func (p *Process) PullFD(fd uint64) (int, error) {
	if !kernel.Has(kernel.PidfdGetfd) {
		return p.SendFD(fd)
	}
	pidfd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", p.PID, err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, p.PID, err)
	}
	return local, nil
}

// sendFDTimeout bounds the wait for a descriptor the process was made to
// send: the injected sendmsg has returned by then, so it is there at once.
const sendFDTimeout = 5 * time.Second

// SendFD makes the process send its descriptor fd to the supervisor: over
// a datagram socket the supervisor binds to a random abstract name, which
// the process reaches only in the supervisor's network namespace. The
// sender's credentials, which the kernel attaches, must name the process.
func (p *Process) SendFD(fd uint64) (int, error) {
	if err := sameNetNamespace(p.PID); err != nil {
		return -1, fmt.Errorf("copy fd %d of %d without pidfd_getfd (%s): %w", fd, p.PID,
			kernel.Current().Why(kernel.PidfdGetfd), err)
	}
	recv, addr, err := bindFDReceiver()
	if err != nil {
		return -1, err
	}
	defer unix.Close(recv)
	sock, err := p.Main.Call("socket", unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer p.Main.Call("close", unix.SYS_CLOSE, sock)

	// struct sockaddr_un, struct iovec, the byte sent, struct msghdr and
	// the control message with the descriptor, in the scratch area.
	const nameOff, iovOff, byteOff, hdrOff, ctlOff = 0, 128, 160, 192, 256
	ctl := unix.UnixRights(int(fd))
	if _, err := p.ScratchAt(0, uint64(ctlOff+len(ctl))); err != nil {
		return -1, err
	}
	at := func(off uint64) uint64 { return p.Scratch + off }
	le := binary.LittleEndian
	name := make([]byte, 2+len(addr))
	le.PutUint16(name, unix.AF_UNIX)
	copy(name[2:], addr)
	iov := make([]byte, 16)
	le.PutUint64(iov[0:], at(byteOff))
	le.PutUint64(iov[8:], 1)
	hdr := make([]byte, 56)
	le.PutUint64(hdr[0:], at(nameOff))
	le.PutUint32(hdr[8:], uint32(len(name)))
	le.PutUint64(hdr[16:], at(iovOff))
	le.PutUint64(hdr[24:], 1)
	le.PutUint64(hdr[32:], at(ctlOff))
	le.PutUint64(hdr[40:], uint64(len(ctl)))
	for _, part := range []struct {
		off uint64
		b   []byte
	}{{nameOff, name}, {iovOff, iov}, {byteOff, []byte{0}}, {hdrOff, hdr}, {ctlOff, ctl}} {
		if err := p.Write(at(part.off), part.b); err != nil {
			return -1, err
		}
	}
	if _, err := p.Main.Call("sendmsg", unix.SYS_SENDMSG, sock, at(hdrOff), unix.MSG_DONTWAIT); err != nil {
		return -1, fmt.Errorf("copy fd %d of %d: %w", fd, p.PID, err)
	}
	return receiveFD(recv, p.PID, sendFDTimeout)
}

// sameNetNamespace checks that pid shares the supervisor's network
// namespace, where its abstract unix socket names are.
func sameNetNamespace(pid int) error {
	var own, its unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &own); err != nil {
		return err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &its); err != nil {
		return err
	}
	if own.Ino != its.Ino || own.Dev != its.Dev {
		return fmt.Errorf("the process is in another network namespace than the supervisor")
	}
	return nil
}

// bindFDReceiver makes the supervisor's receiving socket: datagrams, the
// sender's credentials attached, bound to a random abstract name.
func bindFDReceiver() (fd int, addr []byte, err error) {
	fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, nil, fmt.Errorf("descriptor receiver: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("descriptor receiver: SO_PASSCRED: %w", err)
	}
	random := make([]byte, 12)
	rand.Read(random)
	name := fmt.Sprintf("ckpt-apptainer-%d-%s", os.Getpid(), hex.EncodeToString(random))
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@" + name}); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("descriptor receiver: bind: %w", err)
	}
	return fd, append([]byte{0}, name...), nil
}

// receiveFD takes the one descriptor a datagram from sender carries; a
// datagram from anyone else is dropped (closing what it carried).
func receiveFD(sock, sender int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4)+unix.CmsgSpace(unix.SizeofUcred)+64)
	for {
		_, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			if time.Now().After(deadline) {
				return -1, fmt.Errorf("no descriptor from %d within %v", sender, timeout)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("receive a descriptor from %d: %w", sender, err)
		}
		fds, pid, err := parseFDMessage(oob[:oobn])
		if err != nil || pid != sender || len(fds) != 1 {
			for _, f := range fds {
				unix.Close(f)
			}
			if err == nil && pid == sender {
				err = fmt.Errorf("%d descriptors", len(fds))
			}
			if err != nil {
				return -1, fmt.Errorf("receive a descriptor from %d: %w", sender, err)
			}
			continue // someone else's datagram
		}
		return fds[0], nil
	}
}

// parseFDMessage reads the descriptors and the sender's pid from the
// control messages of one datagram.
func parseFDMessage(oob []byte) (fds []int, pid int, err error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, 0, err
	}
	for i := range msgs {
		switch {
		case msgs[i].Header.Level == unix.SOL_SOCKET && msgs[i].Header.Type == unix.SCM_RIGHTS:
			got, err := unix.ParseUnixRights(&msgs[i])
			if err != nil {
				return fds, 0, err
			}
			fds = append(fds, got...)
		case msgs[i].Header.Level == unix.SOL_SOCKET && msgs[i].Header.Type == unix.SCM_CREDENTIALS:
			cred, err := unix.ParseUnixCredentials(&msgs[i])
			if err != nil {
				return fds, 0, err
			}
			pid = int(cred.Pid)
		}
	}
	return fds, pid, nil
}

// PushFDs installs descriptors of the supervisor in the process: the
// process gets a socketpair, the supervisor takes one end (PullFD) and
// sends the descriptors over it with SCM_RIGHTS, and the process receives
// them with an injected recvmsg. The new descriptors are close-on-exec.
func (p *Process) PushFDs(local []int) ([]uint64, error) {
	pairAddr, err := p.ScratchAt(0, 8)
	if err != nil {
		return nil, err
	}
	if _, err := p.Main.Call("socketpair", unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0, pairAddr); err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	if err := p.Read(pairAddr, b); err != nil {
		return nil, err
	}
	pair := [2]uint64{uint64(binary.LittleEndian.Uint32(b[0:])), uint64(binary.LittleEndian.Uint32(b[4:]))}
	defer func() {
		for _, fd := range pair {
			p.Main.Call("close", unix.SYS_CLOSE, fd)
		}
	}()
	sender, err := p.PullFD(pair[0])
	if err != nil {
		return nil, err
	}
	err = unix.Sendmsg(sender, []byte{0}, unix.UnixRights(local...), nil, 0)
	unix.Close(sender)
	if err != nil {
		return nil, fmt.Errorf("send descriptors: %w", err)
	}

	// struct msghdr (56 bytes on x86-64), one iovec, the byte and the
	// control buffer, in the scratch area.
	ctlLen := unix.CmsgSpace(4 * len(local))
	const hdrOff, iovOff, byteOff, ctlOff = 64, 128, 160, 192
	if _, err := p.ScratchAt(0, uint64(ctlOff+ctlLen)); err != nil {
		return nil, err
	}
	at := func(off uint64) uint64 { return p.Scratch + off }
	le := binary.LittleEndian
	iov := make([]byte, 16)
	le.PutUint64(iov[0:], at(byteOff))
	le.PutUint64(iov[8:], 1)
	hdr := make([]byte, 56)
	le.PutUint64(hdr[16:], at(iovOff))
	le.PutUint64(hdr[24:], 1)
	le.PutUint64(hdr[32:], at(ctlOff))
	le.PutUint64(hdr[40:], uint64(ctlLen))
	if err := p.Write(at(iovOff), iov); err != nil {
		return nil, err
	}
	if err := p.Write(at(hdrOff), hdr); err != nil {
		return nil, err
	}
	if _, err := p.Main.Call("recvmsg", unix.SYS_RECVMSG, pair[1], at(hdrOff), unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT); err != nil {
		return nil, err
	}
	if err := p.Read(at(hdrOff), hdr); err != nil {
		return nil, err
	}
	ctl := make([]byte, le.Uint64(hdr[40:]))
	if err := p.Read(at(ctlOff), ctl); err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(ctl)
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("receive descriptors: control message %d bytes: %v", len(ctl), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return nil, fmt.Errorf("receive descriptors: %w", err)
	}
	if len(fds) != len(local) {
		return nil, fmt.Errorf("receive descriptors: got %d of %d", len(fds), len(local))
	}
	out := make([]uint64, len(fds))
	for i, fd := range fds {
		out[i] = uint64(fd)
	}
	return out, nil
}

// kcmpFile is KCMP_FILE: compare two file descriptors' open file descriptions.
const kcmpFile = 0

// SameOpenFile reports whether fd a of pid1 and fd b of pid2 are one open
// file description (shared offset and flags), the way fork or dup share it.
func SameOpenFile(pid1, a, pid2, b int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(a), uintptr(b), 0)
	return e == 0 && r == 0
}
