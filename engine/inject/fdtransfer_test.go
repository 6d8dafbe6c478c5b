package inject

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSendFDRefusesOtherNetNamespace(t *testing.T) {
	err := sameNetNamespace(os.Getpid())
	if err != nil {
		t.Fatalf("own namespace: %v", err)
	}
	if err := sameNetNamespace(1 << 30); err == nil {
		t.Errorf("a process that does not exist passed")
	}
}

func TestParseFDMessage(t *testing.T) {
	p, q, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	defer q.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	if err := unix.SetsockoptInt(pair[1], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(int(p.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	fd, err := receiveFD(pair[1], os.Getpid(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if !SameOpenFile(os.Getpid(), fd, os.Getpid(), int(p.Fd())) {
		t.Errorf("received fd %d is not the pipe sent", fd)
	}
	// A datagram whose sender is not the process asked is dropped.
	if err := unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(int(p.Fd())), nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := receiveFD(pair[1], 1, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no descriptor") {
		t.Errorf("a stranger's descriptor was taken: %v", err)
	}
}
