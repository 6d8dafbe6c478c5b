package inetsock

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// Validate checks a socket record read from an image before a restore
// acts on it. A record of a descriptor that shares its socket with an
// earlier one carries no state (Family 0).
func Validate(s *image.InetSocket) error {
	if s == nil {
		return fmt.Errorf("TCP or UDP socket descriptor without its socket")
	}
	if s.Family == 0 {
		return nil
	}
	if s.Family != unix.AF_INET && s.Family != unix.AF_INET6 {
		return fmt.Errorf("socket family %d", s.Family)
	}
	tcpStates := []string{image.InetUnconnected, image.InetListen, image.InetEstablished, image.InetFinWait2, image.InetCloseWait, image.InetPending}
	udpStates := []string{image.InetUnconnected, image.InetConnected}
	switch {
	case s.Type == unix.SOCK_STREAM && contains(tcpStates, s.State):
	case s.Type == unix.SOCK_DGRAM && contains(udpStates, s.State):
	default:
		return fmt.Errorf("socket type %d in state %q", s.Type, s.State)
	}
	for _, a := range []string{s.Local, s.Peer} {
		if a == "" {
			continue
		}
		if _, err := sockaddr(s.Family, a); err != nil {
			return err
		}
	}
	connected := s.State == image.InetEstablished || s.State == image.InetFinWait2 || s.State == image.InetCloseWait || s.State == image.InetPending
	switch {
	case connected && (s.TCP == nil || s.Local == "" || s.Peer == ""):
		return fmt.Errorf("TCP connection in state %q without its addresses or repair state", s.State)
	case s.TCP != nil && (s.TCP.Unsent < 0 || s.TCP.Unsent > len(s.TCP.SendQueue)):
		return fmt.Errorf("TCP connection %s: %d unsent bytes of a send queue of %d", describe(s), s.TCP.Unsent, len(s.TCP.SendQueue))
	case s.State == image.InetListen && s.Local == "":
		return fmt.Errorf("TCP listener without an address")
	}
	return nil
}
