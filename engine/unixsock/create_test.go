package unixsock

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// TestRestoreListener rebuilds a listener with a pending connection, over a
// stale socket file like the one a killed job leaves behind.
func TestRestoreListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "listen.sock")
	for _, name := range []string{path, fmt.Sprintf("@ckpt-unixsock-restore-%d", os.Getpid())} {
		t.Run(name, func(t *testing.T) {
			l, _ := newSocket(inject.Host, unix.SOCK_STREAM)
			if err := unix.Bind(l, &unix.SockaddrUnix{Name: name}); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(l, 5); err != nil {
				t.Fatal(err)
			}
			c, _ := newSocket(inject.Host, unix.SOCK_STREAM)
			if err := unix.Connect(c, &unix.SockaddrUnix{Name: name}); err != nil {
				t.Fatal(err)
			}
			sl, _ := record(t, l)
			sc, ic := record(t, c)
			// The job is gone; a path socket file stays behind.
			unix.Close(c)
			unix.Close(l)

			nl, peer, err := Restore(inject.Host, sl, nil)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, nl)
			if peer != -1 {
				t.Fatalf("listener restore returned peer fd %d", peer)
			}
			if ic.SendQueue != 0 {
				t.Fatalf("client had %d bytes unaccepted", ic.SendQueue)
			}
			nc, err := ConnectPending(inject.Host, sc, sl.Name)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, nc)
			rl, il := record(t, nl)
			rc, _ := record(t, nc)
			if rl.Name != name || rl.Backlog != 5 || rl.State != StateListen {
				t.Errorf("restored listener %+v", rl)
			}
			if !slices.Equal(il.Pending, []uint64{rc.Inode}) {
				t.Errorf("restored pending %v, want [%d]", il.Pending, rc.Inode)
			}
		})
	}
}

// TestRestoreListenerRefusesNonSocket checks a regular file at the path is
// neither removed nor bound over.
func TestRestoreListenerRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &image.UnixSocket{Inode: 1, Type: unix.SOCK_STREAM, State: StateListen, Name: path, Backlog: 1}
	if fd, _, err := Restore(inject.Host, s, nil); err == nil {
		unix.Close(fd)
		t.Fatal("Restore bound over a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
		t.Fatalf("file changed: %q %v", b, err)
	}
}

// TestRestoreOneWayDgram rebuilds a datagram socket connected to a named,
// unconnected receiver, with messages queued at the receiver.
func TestRestoreOneWayDgram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rx")
	rx, _ := newSocket(inject.Host, unix.SOCK_DGRAM)
	closeLater(t, rx)
	if err := unix.Bind(rx, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	tx, _ := newSocket(inject.Host, unix.SOCK_DGRAM)
	closeLater(t, tx)
	if err := unix.Connect(tx, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	msgs := msgsOfSizes(60, 3, 0, 500)
	send(t, tx, unix.SOCK_DGRAM, msgs)

	stx, _ := record(t, tx)
	srx, _ := record(t, rx)
	if stx.PeerInode != srx.Inode || srx.PeerInode != 0 || srx.State != StateUnconnected {
		t.Fatalf("recorded tx %+v rx %+v", stx, srx)
	}
	ntx, nrx, err := Restore(inject.Host, stx, srx)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, ntx)
	closeLater(t, nrx)
	rtx, _ := record(t, ntx)
	rrx, _ := record(t, nrx)
	if rtx.PeerInode != rrx.Inode || rrx.PeerInode != 0 || rrx.State != StateUnconnected || rrx.Name != path {
		t.Fatalf("restored tx %+v rx %+v", rtx, rrx)
	}
	if d := sameQueue(unix.SOCK_DGRAM, receive(t, nrx, unix.SOCK_DGRAM, len(msgs)), msgs); d != "" {
		t.Fatal(d)
	}
	// Another sender can reach the receiver by name, as before.
	other, _ := newSocket(inject.Host, unix.SOCK_DGRAM)
	closeLater(t, other)
	if err := unix.Sendto(other, []byte("hi"), 0, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatalf("send to restored receiver: %v", err)
	}
}

// TestRestoreUnconnectedQueue rebuilds a named datagram receiver whose queue
// came from senders that are not restored.
func TestRestoreUnconnectedQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rx")
	s := &image.UnixSocket{Inode: 9, Type: unix.SOCK_DGRAM, State: StateUnconnected, Name: path, Queue: msgsOfSizes(70, 1, 0, 2)}
	fd, peer, err := Restore(inject.Host, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, fd)
	if peer != -1 {
		t.Fatalf("peer fd %d", peer)
	}
	if d := sameQueue(unix.SOCK_DGRAM, receive(t, fd, unix.SOCK_DGRAM, len(s.Queue)), s.Queue); d != "" {
		t.Fatal(d)
	}
	s.Queue = msgsOfSizes(71, make([]int, 100)...)
	if fd, _, err := Restore(inject.Host, s, nil); err == nil {
		unix.Close(fd)
		t.Fatal("100 datagrams for an unconnected receiver accepted beyond max_dgram_qlen")
	}
}

// TestRestorePeerGone rebuilds a socket whose peer closed with data still
// queued: the data is read back, then end of file.
func TestRestorePeerGone(t *testing.T) {
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_SEQPACKET} {
		t.Run(typeName(typ), func(t *testing.T) {
			a, b, err := CreatePair(inject.Host, typ)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, a)
			msgs := msgsOfSizes(80, 10, 20)
			send(t, b, typ, msgs)
			unix.Close(b)
			sa, _ := record(t, a)
			if sa.State != StateConnected || sa.PeerInode != 0 || sa.Shutdown != 3 {
				t.Fatalf("recorded %+v", sa)
			}
			na, peer, err := Restore(inject.Host, sa, nil)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, na)
			if peer != -1 {
				t.Fatalf("peer fd %d", peer)
			}
			ra, _ := record(t, na)
			if ra.Shutdown != 3 || ra.State != StateConnected {
				t.Errorf("restored %+v", ra)
			}
			if d := sameQueue(typ, receive(t, na, typ, len(msgs)), msgs); d != "" {
				t.Fatal(d)
			}
			if n, err := unix.Read(na, make([]byte, 8)); n != 0 || err != nil {
				t.Fatalf("after the data: n=%d err=%v, want end of file", n, err)
			}
		})
	}
}

// TestRestoreRefusesOutsidePeer checks a peer outside the job is named in
// the error.
func TestRestoreRefusesOutsidePeer(t *testing.T) {
	s := &image.UnixSocket{Inode: 1, PeerInode: 2, Type: unix.SOCK_STREAM, State: StateConnected}
	if _, _, err := Restore(inject.Host, s, nil); err == nil {
		t.Fatal("Restore accepted a peer outside the job")
	}
	p := &image.UnixSocket{Inode: 2, PeerInode: 3, Type: unix.SOCK_STREAM, State: StateConnected}
	if _, _, err := Restore(inject.Host, s, p); err == nil {
		t.Fatal("Restore accepted a stream peer connected elsewhere")
	}
}

// TestRestoreShutdown checks recorded shutdown bits come back on both ends
// after the data.
func TestRestoreShutdown(t *testing.T) {
	a, b := testPair(t, unix.SOCK_STREAM)
	send(t, a, unix.SOCK_STREAM, msgsOfSizes(90, 100))
	if err := unix.Shutdown(a, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	sa, _ := record(t, a)
	sb, _ := record(t, b)
	na, nb, err := Restore(inject.Host, sa, sb)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, na)
	closeLater(t, nb)
	ra, _ := record(t, na)
	rb, _ := record(t, nb)
	if ra.Shutdown != sa.Shutdown || rb.Shutdown != sb.Shutdown {
		t.Fatalf("shutdown %d/%d, want %d/%d", ra.Shutdown, rb.Shutdown, sa.Shutdown, sb.Shutdown)
	}
	if d := sameQueue(unix.SOCK_STREAM, rb.Queue, sb.Queue); d != "" {
		t.Fatal(d)
	}
}
