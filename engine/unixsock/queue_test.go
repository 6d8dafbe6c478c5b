package unixsock

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// TestPeekAndRestorePair queues data in both directions of a socketpair,
// checks that PeekQueue sees it and leaves it in place, then rebuilds the
// pair with Restore and checks the new sockets hold the same queues.
func TestPeekAndRestorePair(t *testing.T) {
	tests := []struct {
		name     string
		sockType int
		aToB     [][]byte // queued at b
		bToA     [][]byte // queued at a
	}{
		{"stream empty", unix.SOCK_STREAM, nil, nil},
		{"stream small", unix.SOCK_STREAM, msgsOfSizes(1, 5, 1, 300), msgsOfSizes(2, 17)},
		{"stream 200KiB", unix.SOCK_STREAM, msgsOfSizes(3, 200<<10), msgsOfSizes(4, 3)},
		{"dgram empty", unix.SOCK_DGRAM, nil, nil},
		{"dgram varied", unix.SOCK_DGRAM, msgsOfSizes(5, 0, 1, 4096, 0, 70000, 3, 0), msgsOfSizes(6, 0)},
		{"dgram only zero-length", unix.SOCK_DGRAM, msgsOfSizes(7, 0, 0, 0), nil},
		{"dgram many", unix.SOCK_DGRAM, msgsOfSizes(8, make([]int, 40)...), msgsOfSizes(9, 10, 20, 30)},
		{"seqpacket empty", unix.SOCK_SEQPACKET, nil, nil},
		{"seqpacket varied", unix.SOCK_SEQPACKET, msgsOfSizes(10, 0, 1, 4096, 0, 70000, 3, 0), msgsOfSizes(11, 9, 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := testPair(t, tc.sockType)
			send(t, a, tc.sockType, tc.aToB)
			send(t, b, tc.sockType, tc.bToA)

			sa, _ := record(t, a)
			sb, _ := record(t, b)
			if d := sameQueue(tc.sockType, sb.Queue, tc.aToB); d != "" {
				t.Fatalf("peek b: %s", d)
			}
			if d := sameQueue(tc.sockType, sa.Queue, tc.bToA); d != "" {
				t.Fatalf("peek a: %s", d)
			}
			// A second peek sees the same: the first consumed nothing.
			// (Except zero-length messages behind the head, which the
			// kernel hides from a second peek; see
			// TestZeroLengthPeekedOnce.)
			if !zeroBehindHead(tc.aToB) {
				again, err := PeekQueue(b, tc.sockType)
				if err != nil {
					t.Fatal(err)
				}
				if d := sameQueue(tc.sockType, again, tc.aToB); d != "" {
					t.Fatalf("second peek b: %s", d)
				}
			}
			if off, err := unix.GetsockoptInt(b, unix.SOL_SOCKET, unix.SO_PEEK_OFF); err != nil || off != -1 {
				t.Fatalf("SO_PEEK_OFF after peek = %d, %v; want -1", off, err)
			}

			na, nb, err := Restore(inject.Host, sa, sb)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, na)
			closeLater(t, nb)

			// The original queues are intact.
			if d := sameQueue(tc.sockType, receive(t, b, tc.sockType, len(tc.aToB)), tc.aToB); d != "" {
				t.Fatalf("original b after peek: %s", d)
			}
			if d := sameQueue(tc.sockType, receive(t, a, tc.sockType, len(tc.bToA)), tc.bToA); d != "" {
				t.Fatalf("original a after peek: %s", d)
			}
			// The restored pair holds the same queues and is connected.
			if d := sameQueue(tc.sockType, receive(t, nb, tc.sockType, len(tc.aToB)), tc.aToB); d != "" {
				t.Fatalf("restored b: %s", d)
			}
			if d := sameQueue(tc.sockType, receive(t, na, tc.sockType, len(tc.bToA)), tc.bToA); d != "" {
				t.Fatalf("restored a: %s", d)
			}
			if _, err := unix.Write(na, []byte("x")); err != nil {
				t.Fatalf("restored pair not connected: %v", err)
			}
		})
	}
}

// TestPeekOffsetRestored checks that a peek offset the job had set is put
// back.
func TestPeekOffsetRestored(t *testing.T) {
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		t.Run(typeName(typ), func(t *testing.T) {
			a, b := testPair(t, typ)
			send(t, a, typ, msgsOfSizes(20, 10, 20))
			if err := unix.SetsockoptInt(b, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 3); err != nil {
				t.Fatal(err)
			}
			if _, err := PeekQueue(b, typ); err != nil {
				t.Fatal(err)
			}
			if off, err := unix.GetsockoptInt(b, unix.SOL_SOCKET, unix.SO_PEEK_OFF); err != nil || off != 3 {
				t.Fatalf("SO_PEEK_OFF = %d, %v; want 3", off, err)
			}
			if cred, _ := unix.GetsockoptInt(b, unix.SOL_SOCKET, unix.SO_PASSCRED); cred != 0 {
				t.Fatalf("SO_PASSCRED left set")
			}
		})
	}
}

// TestPeekAfterShutdown checks the end of the queue is found when the
// receiving side is shut down, where an empty non-blocking seqpacket read
// returns 0 like a zero-length message.
func TestPeekAfterShutdown(t *testing.T) {
	tests := []struct {
		name      string
		sockType  int
		msgs      [][]byte
		closePeer bool
	}{
		{"seqpacket zero-length then peer shut", unix.SOCK_SEQPACKET, msgsOfSizes(30, 0, 5, 0), false},
		{"seqpacket empty, peer shut", unix.SOCK_SEQPACKET, nil, false},
		{"seqpacket data, peer closed", unix.SOCK_SEQPACKET, msgsOfSizes(31, 7, 0), true},
		{"dgram zero-length, reader shut", unix.SOCK_DGRAM, msgsOfSizes(32, 0, 0), false},
		{"stream data, peer closed", unix.SOCK_STREAM, msgsOfSizes(33, 1000), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b, err := CreatePair(inject.Host, tc.sockType)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, b)
			send(t, a, tc.sockType, tc.msgs)
			if tc.closePeer {
				unix.Close(a)
			} else {
				closeLater(t, a)
				how := unix.SHUT_WR
				fd := a
				if tc.sockType == unix.SOCK_DGRAM {
					how, fd = unix.SHUT_RD, b
				}
				if err := unix.Shutdown(fd, how); err != nil {
					t.Fatal(err)
				}
			}
			got, err := PeekQueue(b, tc.sockType)
			if err != nil {
				t.Fatal(err)
			}
			if d := sameQueue(tc.sockType, got, tc.msgs); d != "" {
				t.Fatal(d)
			}
			if d := sameQueue(tc.sockType, receive(t, b, tc.sockType, len(tc.msgs)), tc.msgs); d != "" {
				t.Fatalf("after peek: %s", d)
			}
		})
	}
}

// TestPeekRefusesDescriptors checks that SCM_RIGHTS in a queue is refused,
// that the descriptors the peek received are closed again, and that the
// message stays queued.
func TestPeekRefusesDescriptors(t *testing.T) {
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		t.Run(typeName(typ), func(t *testing.T) {
			a, b := testPair(t, typ)
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			closeLater(t, p[0])
			closeLater(t, p[1])
			send(t, a, typ, msgsOfSizes(40, 4))
			if _, err := unix.SendmsgN(a, []byte("fd"), unix.UnixRights(p[0], p[1]), nil, 0); err != nil {
				t.Fatal(err)
			}
			before := openFDs(t)
			_, err := PeekQueue(b, typ)
			if !errors.Is(err, ErrFDsInFlight) {
				t.Fatalf("PeekQueue error = %v, want %v", err, ErrFDsInFlight)
			}
			if after := openFDs(t); after != before {
				t.Fatalf("open descriptors: %d before peek, %d after", before, after)
			}
			// The message with the descriptors is still there.
			buf := make([]byte, 64)
			oob := make([]byte, unix.CmsgSpace(8))
			total := 0
			for total < 6 {
				n, oobn, _, _, err := unix.Recvmsg(b, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
				if err != nil {
					t.Fatalf("receive after peek: %v", err)
				}
				total += n
				if oobn > 0 {
					msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
					fds, _ := unix.ParseUnixRights(&msgs[0])
					for _, f := range fds {
						unix.Close(f)
					}
					if len(fds) != 2 {
						t.Fatalf("got %d descriptors after peek, want 2", len(fds))
					}
					return
				}
			}
			t.Fatal("descriptors were not delivered after the peek")
		})
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestRefillTooMuch checks that a queue that cannot fit fails with a clear
// error instead of blocking.
func TestRefillTooMuch(t *testing.T) {
	a, _ := testPair(t, unix.SOCK_STREAM)
	huge := [][]byte{make([]byte, 64<<20)}
	// SO_SNDBUFFORCE lifts the limit for a caller with CAP_NET_ADMIN.
	canForce := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4096) == nil
	err := Refill(a, unix.SOCK_STREAM, huge)
	if canForce {
		if err != nil {
			t.Fatalf("Refill with SO_SNDBUFFORCE: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatal("Refill of 64 MiB succeeded without privilege")
	}
	t.Logf("refused as expected: %v", err)
}

// TestRefillBadType checks that an unknown socket type is named in the error.
func TestRefillBadType(t *testing.T) {
	if err := Refill(0, 99, [][]byte{{1}}); err == nil {
		t.Fatal("Refill accepted socket type 99")
	}
	if _, err := PeekQueue(0, 99); err == nil {
		t.Fatal("PeekQueue accepted socket type 99")
	}
}

// zeroBehindHead reports whether a message after the first is empty.
func zeroBehindHead(q [][]byte) bool {
	for i := 1; i < len(q); i++ {
		if len(q[i]) == 0 {
			return true
		}
	}
	return false
}

// TestZeroLengthPeekedOnce pins down the kernel behaviour PeekQueue
// documents: once peeked, a zero-length message behind the head is skipped
// by every later peek at an offset, though it stays queued. If this starts
// failing, the kernel changed and the limitation can be lifted.
func TestZeroLengthPeekedOnce(t *testing.T) {
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		t.Run(typeName(typ), func(t *testing.T) {
			a, b := testPair(t, typ)
			msgs := msgsOfSizes(100, 0, 4, 0, 0, 6)
			send(t, a, typ, msgs)
			first, err := PeekQueue(b, typ)
			if err != nil {
				t.Fatal(err)
			}
			if d := sameQueue(typ, first, msgs); d != "" {
				t.Fatalf("first peek: %s", d)
			}
			second, err := PeekQueue(b, typ)
			if err != nil {
				t.Fatal(err)
			}
			// The head (zero-length) is still seen; the two behind it
			// are not.
			want := [][]byte{msgs[0], msgs[1], msgs[4]}
			if d := sameQueue(typ, second, want); d != "" {
				t.Fatalf("second peek: %s", d)
			}
			if d := sameQueue(typ, receive(t, b, typ, len(msgs)), msgs); d != "" {
				t.Fatalf("queue after peeks: %s", d)
			}
		})
	}
}
