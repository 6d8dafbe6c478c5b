package unixsock

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// TestDiagPairs checks what Diag reports for connected pairs: type, state,
// mutual peers, queue length and shutdown bits.
func TestDiagPairs(t *testing.T) {
	tests := []struct {
		sockType int
		shutA    int // how a is shut down, -1 for not
		wantA    int // Shutdown bits reported for a
		wantB    int
	}{
		{unix.SOCK_STREAM, -1, 0, 0},
		{unix.SOCK_STREAM, unix.SHUT_WR, 2, 1},
		{unix.SOCK_SEQPACKET, unix.SHUT_RD, 1, 2},
		{unix.SOCK_SEQPACKET, unix.SHUT_RDWR, 3, 3},
		{unix.SOCK_DGRAM, unix.SHUT_WR, 2, 0}, // no peer side for datagrams
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s shut %d", typeName(tc.sockType), tc.shutA), func(t *testing.T) {
			a, b := testPair(t, tc.sockType)
			send(t, a, tc.sockType, msgsOfSizes(50, 11, 22))
			if tc.shutA >= 0 {
				if err := unix.Shutdown(a, tc.shutA); err != nil {
					t.Fatal(err)
				}
			}
			sa, _ := record(t, a)
			sb, ib := record(t, b)
			if sa.Type != tc.sockType || sb.Type != tc.sockType {
				t.Errorf("types %d/%d, want %d", sa.Type, sb.Type, tc.sockType)
			}
			if sa.State != StateConnected || sb.State != StateConnected {
				t.Errorf("states %q/%q, want connected", sa.State, sb.State)
			}
			if sa.PeerInode != sb.Inode || sb.PeerInode != sa.Inode {
				t.Errorf("peers: a=%d->%d b=%d->%d", sa.Inode, sa.PeerInode, sb.Inode, sb.PeerInode)
			}
			if sa.Shutdown != tc.wantA || sb.Shutdown != tc.wantB {
				t.Errorf("shutdown a=%d b=%d, want %d %d", sa.Shutdown, sb.Shutdown, tc.wantA, tc.wantB)
			}
			wantQ := uint32(33)
			if tc.sockType == unix.SOCK_DGRAM {
				wantQ = 11 // first datagram only
			}
			if ib.RecvQueue != wantQ {
				t.Errorf("b RecvQueue %d, want %d", ib.RecvQueue, wantQ)
			}
		})
	}
}

// TestDiagListener checks a named listener with one connection waiting in
// its backlog, for a path and an abstract name.
func TestDiagListener(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		addr     string
		sockType int
		backlog  int
	}{
		{"path stream", filepath.Join(dir, "l.sock"), unix.SOCK_STREAM, 7},
		{"abstract stream", fmt.Sprintf("@ckpt-unixsock-test-%d", os.Getpid()), unix.SOCK_STREAM, 3},
		{"path seqpacket", filepath.Join(dir, "s.sock"), unix.SOCK_SEQPACKET, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := newSocket(inject.Host, tc.sockType)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, l)
			if err := unix.Bind(l, &unix.SockaddrUnix{Name: tc.addr}); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(l, tc.backlog); err != nil {
				t.Fatal(err)
			}
			c, err := newSocket(inject.Host, tc.sockType)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, c)
			if err := unix.Connect(c, &unix.SockaddrUnix{Name: tc.addr}); err != nil {
				t.Fatal(err)
			}

			sl, il := record(t, l)
			sc, ic := record(t, c)
			if sl.State != StateListen || sl.Name != tc.addr || sl.Backlog != tc.backlog {
				t.Errorf("listener: state %q name %q backlog %d; want listen %q %d", sl.State, sl.Name, sl.Backlog, tc.addr, tc.backlog)
			}
			if !slices.Equal(il.Pending, []uint64{sc.Inode}) || il.RecvQueue != 1 {
				t.Errorf("listener pending %v (RecvQueue %d), want [%d]", il.Pending, il.RecvQueue, sc.Inode)
			}
			if sc.State != StateConnected || sc.Name != "" {
				t.Errorf("client: state %q name %q", sc.State, sc.Name)
			}
			if ic.SendQueue != 0 {
				t.Errorf("client SendQueue %d with nothing sent", ic.SendQueue)
			}
			if sc.PeerInode != 0 || sc.PeerName != tc.addr || ic.PendingOn != sl.Inode {
				t.Errorf("pending client: peer %d name %q pending on %d; want 0 %q %d", sc.PeerInode, sc.PeerName, ic.PendingOn, tc.addr, sl.Inode)
			}
		})
	}
}

// TestDiagAcceptedNames checks names and PeerName of an accepted connection:
// the accepted end carries the listener's name, the client sees it as its
// peer's.
func TestDiagAcceptedNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "srv")
	l, err := newSocket(inject.Host, unix.SOCK_STREAM)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, l)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 4); err != nil {
		t.Fatal(err)
	}
	c, _ := newSocket(inject.Host, unix.SOCK_STREAM)
	closeLater(t, c)
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	s, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	closeLater(t, s)
	ss, _ := record(t, s)
	sc, _ := record(t, c)
	sl, il := record(t, l)
	if ss.Name != path || sc.PeerName != path || sc.PeerInode != ss.Inode || ss.PeerInode != sc.Inode {
		t.Errorf("accepted %+v client %+v", ss, sc)
	}
	if len(il.Pending) != 0 || sl.Backlog != 4 {
		t.Errorf("listener after accept: pending %v backlog %d", il.Pending, sl.Backlog)
	}
}

// TestDiagUnconnected checks unbound and bound unconnected sockets.
func TestDiagUnconnected(t *testing.T) {
	abstract := fmt.Sprintf("@ckpt-unixsock-dgram-%d\x00tail", os.Getpid())
	for _, name := range []string{"", filepath.Join(t.TempDir(), "d"), abstract} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			fd, err := newSocket(inject.Host, unix.SOCK_DGRAM)
			if err != nil {
				t.Fatal(err)
			}
			closeLater(t, fd)
			if name != "" {
				if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
					t.Fatal(err)
				}
			}
			s, _ := record(t, fd)
			if s.State != StateUnconnected || s.Name != name || s.PeerInode != 0 || s.Type != unix.SOCK_DGRAM {
				t.Errorf("got %+v, want unconnected dgram named %q", s, name)
			}
		})
	}
}

// TestInodeNotSocket checks Inode refuses a descriptor that is no socket.
func TestInodeNotSocket(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Inode(int(f.Fd())); err == nil {
		t.Fatal("Inode accepted /dev/null")
	}
}
