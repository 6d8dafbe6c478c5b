package inetsock

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func conn(local, peer string, delivered uint64) *image.InetSocket {
	return &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_STREAM, State: image.InetEstablished,
		Local: local, Peer: peer, TCP: &image.TCPConn{Delivered: delivered}}
}

func listener(local string, waiting int) *image.InetSocket {
	return &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_STREAM, State: image.InetListen,
		Local: local, Backlog: 8, Waiting: waiting}
}

func TestPair(t *testing.T) {
	tests := []struct {
		name  string
		socks []*image.InetSocket
		// err is a part of the error; "" for none.
		err string
		// pending are the indexes that must end InetPending.
		pending []int
	}{
		{name: "both ends in the job",
			socks: []*image.InetSocket{conn("127.0.0.1:5000", "127.0.0.1:6000", 10), conn("127.0.0.1:6000", "127.0.0.1:5000", 0)}},
		{name: "other end outside",
			socks: []*image.InetSocket{conn("127.0.0.1:5000", "10.0.0.1:80", 0)},
			err:   "pid 1 fd 3: TCP connection 127.0.0.1:5000 -> 10.0.0.1:80: the other end is not in the job"},
		{name: "client waiting in a backlog",
			socks:   []*image.InetSocket{listener("0.0.0.0:7000", 1), conn("127.0.0.1:40000", "127.0.0.1:7000", 0)},
			pending: []int{1}},
		{name: "waiting client that sent data",
			socks: []*image.InetSocket{listener("127.0.0.1:7000", 1), conn("127.0.0.1:40000", "127.0.0.1:7000", 5)},
			err:   "sent 5 bytes that wait, unread"},
		{name: "backlog holds a connection from outside",
			socks: []*image.InetSocket{listener("127.0.0.1:7000", 2), conn("127.0.0.1:40000", "127.0.0.1:7000", 0)},
			err:   "2 connections waiting to be accepted, 1 of them from a program outside the job"},
		{name: "accepted dual-stack connection shows mapped addresses",
			socks: []*image.InetSocket{
				{Family: unix.AF_INET6, Type: unix.SOCK_STREAM, State: image.InetEstablished, Local: "[::ffff:127.0.0.1]:7000", Peer: "[::ffff:127.0.0.1]:40000", TCP: &image.TCPConn{}},
				conn("127.0.0.1:40000", "127.0.0.1:7000", 0)}},
		{name: "listener on another address",
			socks: []*image.InetSocket{listener("127.0.0.2:7000", 0), conn("127.0.0.1:40000", "127.0.0.1:7000", 0)},
			err:   "not in the job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var refs []Ref
			for i, s := range tt.socks {
				refs = append(refs, Ref{PID: 1, FD: 3 + i, S: s})
			}
			err := Pair(refs)
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("Pair: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("Pair: %v, want an error with %q", err, tt.err)
			}
			for _, i := range tt.pending {
				if tt.socks[i].State != image.InetPending {
					t.Errorf("socket %d: state %q, want %q", i, tt.socks[i].State, image.InetPending)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := conn("127.0.0.1:1", "127.0.0.1:2", 0)
	tests := []struct {
		name string
		s    *image.InetSocket
		bad  bool
	}{
		{"connection", ok, false},
		{"copy of an earlier descriptor", &image.InetSocket{}, false},
		{"missing", nil, true},
		{"family", &image.InetSocket{Family: unix.AF_UNIX, Type: unix.SOCK_STREAM, State: image.InetListen, Local: "127.0.0.1:1"}, true},
		{"UDP listening", &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, State: image.InetListen}, true},
		{"bad address", &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, State: image.InetUnconnected, Local: "localhost:1"}, true},
		{"IPv6 address on IPv4", &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, State: image.InetUnconnected, Local: "[::1]:1"}, true},
		{"connection without repair state", &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_STREAM, State: image.InetEstablished, Local: "127.0.0.1:1", Peer: "127.0.0.1:2"}, true},
		{"unsent past the queue", &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_STREAM, State: image.InetEstablished, Local: "127.0.0.1:1", Peer: "127.0.0.1:2", TCP: &image.TCPConn{Unsent: 3, SendQueue: []byte("ab")}}, true},
		{"listener without address", &image.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_STREAM, State: image.InetListen}, true},
	}
	for _, tt := range tests {
		if err := Validate(tt.s); (err != nil) != tt.bad {
			t.Errorf("%s: Validate: %v, want error %v", tt.name, err, tt.bad)
		}
	}
}

func TestAddresses(t *testing.T) {
	tests := []struct {
		listener, addr string
		want           bool
	}{
		{"0.0.0.0:80", "127.0.0.1:80", true},
		{"[::]:80", "127.0.0.1:80", true},
		{"127.0.0.1:80", "[::ffff:127.0.0.1]:80", true},
		{"127.0.0.1:80", "127.0.0.1:81", false},
		{"127.0.0.2:80", "127.0.0.1:80", false},
	}
	for _, tt := range tests {
		if got := listensFor(tt.listener, tt.addr); got != tt.want {
			t.Errorf("listensFor(%q, %q) = %v, want %v", tt.listener, tt.addr, got, tt.want)
		}
	}
	for _, a := range []string{"127.0.0.1:5", "[::1]:5", "[fe80::1]:5"} {
		fam := unix.AF_INET6
		if !strings.HasPrefix(a, "[") {
			fam = unix.AF_INET
		}
		sa, err := sockaddr(fam, a)
		if err != nil {
			t.Fatalf("sockaddr(%q): %v", a, err)
		}
		if got := addrString(sa); got != a {
			t.Errorf("address %q came back as %q", a, got)
		}
	}
}
