package inetsock

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// The round trips dump sockets in the test's own network namespace, close
// them (with a reset, so that no TIME_WAIT entry holds their addresses),
// create them again and check what the restored ones hold. TCP_REPAIR
// needs CAP_NET_ADMIN over the namespace: root, in CI.

func needRepair(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := repair(fd, unix.TCP_REPAIR_ON); errors.Is(err, ErrNeedsOwnNetwork) {
		t.Skip("no CAP_NET_ADMIN over this network namespace: TCP_REPAIR is refused")
	}
}

// tcpPair returns a listener and a connection's two ends, over family's
// loopback address.
func tcpPair(t *testing.T, family int) (l, c, s int) {
	t.Helper()
	var any unix.Sockaddr = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if family == unix.AF_INET6 {
		any = &unix.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	l, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(err)
	must(unix.Bind(l, any))
	must(unix.Listen(l, 4))
	addr, err := unix.Getsockname(l)
	must(err)
	c, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	must(err)
	must(unix.Connect(c, addr))
	s, _, err = unix.Accept4(l, unix.SOCK_CLOEXEC)
	must(err)
	return l, c, s
}

// dropAll closes fds with a reset instead of a FIN.
func dropAll(fds ...int) {
	for _, fd := range fds {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}
}

func dumpAll(t *testing.T, fds ...int) []*image.InetSocket {
	t.Helper()
	var refs []Ref
	for i, fd := range fds {
		s, err := Dump(fd)
		if err != nil {
			t.Fatalf("Dump: %v", err)
		}
		refs = append(refs, Ref{PID: 1, FD: i, S: s})
	}
	if err := Pair(refs); err != nil {
		t.Fatalf("Pair: %v", err)
	}
	out := make([]*image.InetSocket, len(refs))
	for i, r := range refs {
		out[i] = r.S
	}
	return out
}

func createAll(t *testing.T, socks []*image.InetSocket) []int {
	t.Helper()
	var f Finisher
	var fds []int
	for _, s := range socks {
		fd, err := f.Create(inject.Host, s)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		fds = append(fds, fd)
	}
	if err := f.Finish(); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	t.Cleanup(func() { dropAll(fds...) })
	return fds
}

func readN(t *testing.T, fd, n int) []byte {
	t.Helper()
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	var out []byte
	buf := make([]byte, n)
	for len(out) < n {
		got, err := unix.Read(fd, buf[:n-len(out)])
		if err != nil || got == 0 {
			t.Fatalf("read %d of %d bytes: %v (n=%d)", len(out), n, err, got)
		}
		out = append(out, buf[:got]...)
	}
	return out
}

func TestRoundTripConnection(t *testing.T) {
	needRepair(t)
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		l, c, s := tcpPair(t, family)
		unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		toServer := bytes.Repeat([]byte("client->server "), 2000)
		toClient := bytes.Repeat([]byte("server->client "), 1000)
		if _, err := unix.Write(c, toServer); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(s, toClient); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // delivered over loopback
		socks := dumpAll(t, l, c, s)
		if got := socks[2].TCP.RecvQueue; !bytes.Equal(got, toServer) {
			t.Fatalf("server's receive queue: %d bytes, want the %d the client wrote", len(got), len(toServer))
		}
		dropAll(c, s, l)

		fds := createAll(t, socks)
		c, s = fds[1], fds[2]
		if got := readN(t, s, len(toServer)); !bytes.Equal(got, toServer) {
			t.Errorf("restored server read other data than was queued")
		}
		if got := readN(t, c, len(toClient)); !bytes.Equal(got, toClient) {
			t.Errorf("restored client read other data than was queued")
		}
		if v, _ := unix.GetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_NODELAY); v == 0 {
			t.Errorf("TCP_NODELAY lost")
		}
		// The connection goes on both ways.
		unix.Write(c, []byte("ping"))
		if got := readN(t, s, 4); string(got) != "ping" {
			t.Errorf("after restore: %q", got)
		}
		unix.Write(s, []byte("pong"))
		if got := readN(t, c, 4); string(got) != "pong" {
			t.Errorf("after restore: %q", got)
		}
	}
}

func TestRoundTripHalfClosedAndBacklog(t *testing.T) {
	needRepair(t)
	l, c, s := tcpPair(t, unix.AF_INET)
	unix.Write(c, []byte("last words"))
	unix.Shutdown(c, unix.SHUT_WR)
	laddr, _ := unix.Getsockname(l)
	waiting, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(waiting, laddr); err != nil {
		t.Fatal(err)
	}
	bound, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(bound, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(bound, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	socks := dumpAll(t, l, c, s, waiting, bound)
	if socks[1].State != image.InetFinWait2 || socks[2].State != image.InetCloseWait || socks[3].State != image.InetPending {
		t.Fatalf("states %q %q %q, want fin-wait2, close-wait, pending", socks[1].State, socks[2].State, socks[3].State)
	}
	dropAll(c, s, waiting, l, bound)

	fds := createAll(t, socks)
	l, c, s, waiting, bound = fds[0], fds[1], fds[2], fds[3], fds[4]
	if v, _ := unix.GetsockoptInt(bound, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("a bound socket lost SO_REUSEADDR")
	}
	if sa, _ := unix.Getsockname(bound); addrString(sa) != socks[4].Local {
		t.Errorf("bound socket at %s, was at %s", addrString(sa), socks[4].Local)
	}
	if got := readN(t, s, 10); string(got) != "last words" {
		t.Errorf("half-closed stream: %q", got)
	}
	if n, err := unix.Read(s, make([]byte, 1)); n != 0 || err != nil {
		t.Errorf("after the data: read %d, %v, want end of file", n, err)
	}
	unix.Write(s, []byte("reply"))
	if got := readN(t, c, 5); string(got) != "reply" {
		t.Errorf("the half-closed end no longer reads: %q", got)
	}
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatalf("accept the waiting client: %v", err)
	}
	defer unix.Close(a)
	peer, _ := unix.Getpeername(a)
	if got, want := addrString(peer), socks[3].Local; got != want {
		t.Errorf("accepted %s, the waiting client was %s", got, want)
	}
	unix.Write(waiting, []byte("hello"))
	if got := readN(t, a, 5); string(got) != "hello" {
		t.Errorf("waiting client after accept: %q", got)
	}
}

func TestRoundTripUDP(t *testing.T) {
	needRepair(t)
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	r, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	snd, _ := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err := errors.Join(unix.Bind(r, lo), unix.Bind(snd, lo)); err != nil {
		t.Fatal(err)
	}
	to, _ := unix.Getsockname(r)
	for _, d := range []string{"one", "two", "three"} {
		if err := unix.Sendto(snd, []byte(d), 0, to); err != nil {
			t.Fatal(err)
		}
	}
	socks := dumpAll(t, r, snd)
	if len(socks[0].Datagrams) != 3 {
		t.Fatalf("%d datagrams recorded, want 3", len(socks[0].Datagrams))
	}
	// The job's own queue is as it was.
	buf := make([]byte, 16)
	if n, _, _ := unix.Recvfrom(r, buf, 0); string(buf[:n]) != "one" {
		t.Fatalf("the dump took datagrams out of the queue: %q", buf[:n])
	}
	unix.Close(r)
	unix.Close(snd)

	fds := createAll(t, socks)
	sender, _ := unix.Getsockname(fds[1])
	unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
	for _, want := range []string{"one", "two", "three"} {
		n, from, err := unix.Recvfrom(fds[0], buf, 0)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("restored queue: %q, %v, want %q", buf[:n], err, want)
		}
		if addrString(from) != addrString(sender) {
			t.Errorf("datagram %q from %s, the sender is %s", want, addrString(from), addrString(sender))
		}
	}
}
