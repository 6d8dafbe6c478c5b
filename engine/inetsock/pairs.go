package inetsock

import (
	"fmt"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// Ref is one socket of the job as a checkpoint recorded it: the first
// descriptor met of its open file description.
type Ref struct {
	PID, FD int
	S       *image.InetSocket
}

func (r Ref) String() string { return fmt.Sprintf("pid %d fd %d", r.PID, r.FD) }

// Pair checks the job's TCP connections once every process is recorded:
// each must have its other end in the job, either held by a process or, for
// a client, waiting in the backlog of one of the job's listeners (its state
// becomes InetPending). A connection to anything else cannot be restored
// and fails the checkpoint, naming the process, descriptor and both
// addresses.
func Pair(socks []Ref) error {
	type key struct{ local, peer string }
	ends := map[key]bool{}
	var listeners []Ref
	for _, r := range socks {
		switch {
		case r.S.TCP != nil:
			ends[key{norm(r.S.Local), norm(r.S.Peer)}] = true
		case r.S.State == image.InetListen:
			listeners = append(listeners, r)
		}
	}
	clients := map[int]int{} // listener index -> clients waiting in it
	for _, r := range socks {
		s := r.S
		if s.TCP == nil || ends[key{norm(s.Peer), norm(s.Local)}] {
			continue
		}
		l := -1
		for i, lr := range listeners {
			if listensFor(lr.S.Local, s.Peer) {
				l = i
				break
			}
		}
		switch {
		case l < 0:
			return fmt.Errorf("%s: TCP connection %s -> %s: the other end is not in the job (a program outside it, or a socket the job closed): not supported", r, s.Local, s.Peer)
		case s.State != image.InetEstablished:
			return fmt.Errorf("%s: TCP connection %s -> %s is half-closed before the listener of %s (%s) accepted it: not supported; checkpoint again in a moment", r, s.Local, s.Peer, listeners[l].S.Local, listeners[l])
		case s.TCP.Delivered > 0:
			return fmt.Errorf("%s: TCP connection %s -> %s sent %d bytes that wait, unread, in a connection the listener of %s (%s) has not accepted yet: not supported; checkpoint again in a moment", r, s.Local, s.Peer, s.TCP.Delivered, listeners[l].S.Local, listeners[l])
		}
		s.State = image.InetPending
		clients[l]++
	}
	for i, lr := range listeners {
		if n := lr.S.Waiting; n > clients[i] {
			return fmt.Errorf("%s: TCP listener %s has %d connections waiting to be accepted, %d of them from a program outside the job or a socket the job closed: not supported",
				lr, lr.S.Local, n, n-clients[i])
		}
	}
	return nil
}

// norm is an address in one form for IPv4 and IPv4-mapped IPv6, as the
// two ends of a dual-stack connection show it.
func norm(addr string) string {
	if a, err := parseAddrPort(addr); err == nil {
		return a.String()
	}
	return addr
}
