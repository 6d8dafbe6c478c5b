package inetsock

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// addrString renders a socket address as image.InetSocket keeps it; ""
// for none (not bound, not connected).
func addrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		ap := netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
		if a.Port == 0 && ap.Addr().IsUnspecified() {
			return ""
		}
		return ap.String()
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.Port == 0 && ip.IsUnspecified() {
			return ""
		}
		return netip.AddrPortFrom(ip, uint16(a.Port)).String()
	}
	return ""
}

// sockaddr parses s for a socket of family.
func sockaddr(family int, s string) (unix.Sockaddr, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", s, err)
	}
	switch family {
	case unix.AF_INET:
		if !ap.Addr().Unmap().Is4() {
			return nil, fmt.Errorf("address %q is not IPv4", s)
		}
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}, nil
	case unix.AF_INET6:
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, nil
	}
	return nil, fmt.Errorf("address family %d is not IPv4 or IPv6", family)
}

// listensFor says whether a listener bound to listener accepts connections
// to addr: the same port, and the same address or a wildcard one.
func listensFor(listener, addr string) bool {
	pl, errL := netip.ParseAddrPort(listener)
	pa, errA := netip.ParseAddrPort(addr)
	if errL != nil || errA != nil || pl.Port() != pa.Port() {
		return false
	}
	return pl.Addr().IsUnspecified() || pl.Addr().Unmap() == pa.Addr().Unmap()
}

// parseAddrPort parses addr with IPv4-mapped IPv6 addresses unmapped.
func parseAddrPort(addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return ap, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
