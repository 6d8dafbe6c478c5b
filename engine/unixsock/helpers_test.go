package unixsock

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// testPair returns a socketpair of sockType closed at the end of the test.
func testPair(t *testing.T, sockType int) (int, int) {
	t.Helper()
	a, b, err := CreatePair(inject.Host, sockType)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(a); unix.Close(b) })
	return a, b
}

// closeLater closes fd at the end of the test.
func closeLater(t *testing.T, fd int) {
	t.Cleanup(func() { unix.Close(fd) })
}

// send queues msgs at fd's peer the plain way, with a send buffer large
// enough for the test data.
func send(t *testing.T, fd, sockType int, msgs [][]byte) {
	t.Helper()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 2<<20); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if sockType == unix.SOCK_STREAM {
			if len(m) == 0 {
				continue
			}
			n, err := unix.Write(fd, m)
			if err != nil || n != len(m) {
				t.Fatalf("write %d: n=%d err=%v", i, n, err)
			}
			continue
		}
		n, err := unix.SendmsgN(fd, m, nil, nil, unix.MSG_DONTWAIT)
		if err != nil || n != len(m) {
			t.Fatalf("send message %d (%d bytes): n=%d err=%v", i, len(m), n, err)
		}
	}
}

// receive consumes what fd has queued: count messages, or for a stream
// every byte, without ever blocking.
func receive(t *testing.T, fd, sockType, count int) [][]byte {
	t.Helper()
	buf := make([]byte, 1<<20)
	if sockType == unix.SOCK_STREAM {
		var all []byte
		for {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) || (err == nil && n == 0) {
				break
			}
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			all = append(all, buf[:n]...)
		}
		if len(all) == 0 {
			return nil
		}
		return [][]byte{all}
	}
	var out [][]byte
	for range count {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("receive message %d of %d: %v", len(out), count, err)
		}
		out = append(out, append([]byte{}, buf[:n]...))
	}
	if n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) && !(err == nil && n == 0 && sockType == unix.SOCK_SEQPACKET) {
		t.Fatalf("queue holds more than %d messages: n=%d err=%v", count, n, err)
	}
	return out
}

// joined is the concatenation of a stream's entries, for comparing byte
// streams whose chunking does not matter.
func joined(q [][]byte) []byte { return bytes.Join(q, nil) }

// sameQueue reports how got differs from want, "" when equal. Streams are
// compared as byte streams, messages one by one.
func sameQueue(sockType int, got, want [][]byte) string {
	if sockType == unix.SOCK_STREAM {
		g, w := joined(got), joined(want)
		if !bytes.Equal(g, w) {
			return fmt.Sprintf("stream: got %d bytes, want %d", len(g), len(w))
		}
		return ""
	}
	if len(got) != len(want) {
		return fmt.Sprintf("got %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			return fmt.Sprintf("message %d: got %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
	return ""
}

// payload returns n pseudo-random bytes that differ per seed.
func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// msgsOfSizes builds one payload per size.
func msgsOfSizes(seed uint64, sizes ...int) [][]byte {
	var out [][]byte
	for i, n := range sizes {
		out = append(out, payload(n, seed+uint64(i)))
	}
	return out
}

// record is what the engine does at dump time for one descriptor: find the
// socket in Diag by inode and peek its queue.
func record(t *testing.T, fd int) (*image.UnixSocket, Info) {
	t.Helper()
	ino, err := Inode(fd)
	if err != nil {
		t.Fatal(err)
	}
	socks, infos, err := Diag(inject.Host)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := socks[ino]
	if !ok {
		t.Fatalf("Diag has no socket with inode %d", ino)
	}
	if s.State != StateListen {
		if s.Queue, err = PeekQueue(fd, s.Type); err != nil {
			t.Fatal(err)
		}
	}
	return s, infos[ino]
}

// typeName names a socket type for subtest names.
func typeName(sockType int) string {
	switch sockType {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "dgram"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	}
	return fmt.Sprint(sockType)
}
