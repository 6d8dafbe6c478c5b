package inetsock

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// sockOption is a socket option kept across a checkpoint: read with
// getsockopt at checkpoint time, set again with setsockopt at restore.
type sockOption struct {
	name       string
	level, opt int
	// only limits the option to sockets of this type and family (0: any).
	sockType, family int
}

// sockOptions are the options a job sets on TCP and UDP sockets that change
// what it sees: buffer sizes, keepalive, Nagle, address reuse, IPv6-only.
// SO_SNDBUF and SO_RCVBUF read back twice what was set (the kernel's
// bookkeeping share); restore sets half of what was read.
var sockOptions = []sockOption{
	{name: "SO_REUSEADDR", level: unix.SOL_SOCKET, opt: unix.SO_REUSEADDR},
	{name: "SO_REUSEPORT", level: unix.SOL_SOCKET, opt: unix.SO_REUSEPORT},
	{name: "SO_KEEPALIVE", level: unix.SOL_SOCKET, opt: unix.SO_KEEPALIVE},
	{name: "SO_BROADCAST", level: unix.SOL_SOCKET, opt: unix.SO_BROADCAST},
	{name: "SO_SNDBUF", level: unix.SOL_SOCKET, opt: unix.SO_SNDBUF},
	{name: "SO_RCVBUF", level: unix.SOL_SOCKET, opt: unix.SO_RCVBUF},
	{name: "SO_RCVLOWAT", level: unix.SOL_SOCKET, opt: unix.SO_RCVLOWAT},
	{name: "SO_PRIORITY", level: unix.SOL_SOCKET, opt: unix.SO_PRIORITY},
	{name: "TCP_NODELAY", level: unix.IPPROTO_TCP, opt: unix.TCP_NODELAY, sockType: unix.SOCK_STREAM},
	{name: "TCP_CORK", level: unix.IPPROTO_TCP, opt: unix.TCP_CORK, sockType: unix.SOCK_STREAM},
	{name: "TCP_KEEPIDLE", level: unix.IPPROTO_TCP, opt: unix.TCP_KEEPIDLE, sockType: unix.SOCK_STREAM},
	{name: "TCP_KEEPINTVL", level: unix.IPPROTO_TCP, opt: unix.TCP_KEEPINTVL, sockType: unix.SOCK_STREAM},
	{name: "TCP_KEEPCNT", level: unix.IPPROTO_TCP, opt: unix.TCP_KEEPCNT, sockType: unix.SOCK_STREAM},
	{name: "TCP_USER_TIMEOUT", level: unix.IPPROTO_TCP, opt: unix.TCP_USER_TIMEOUT, sockType: unix.SOCK_STREAM},
	{name: "TCP_QUICKACK", level: unix.IPPROTO_TCP, opt: unix.TCP_QUICKACK, sockType: unix.SOCK_STREAM},
	{name: "IPV6_V6ONLY", level: unix.IPPROTO_IPV6, opt: unix.IPV6_V6ONLY, family: unix.AF_INET6},
}

// appliesTo says whether o is kept for a socket of sockType and family.
func (o sockOption) appliesTo(sockType, family int) bool {
	return (o.sockType == 0 || o.sockType == sockType) && (o.family == 0 || o.family == family)
}

// readOptions reads the kept options of socket fd.
func readOptions(fd, sockType, family int) (map[string]int, error) {
	out := map[string]int{}
	for _, o := range sockOptions {
		if !o.appliesTo(sockType, family) {
			continue
		}
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP) {
			continue // an option this kernel lacks was not set either
		}
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", o.name, err)
		}
		out[o.name] = v
	}
	return out, nil
}

// applyOptions sets the recorded options on fd, except those in skip,
// which the caller sets at their own moment.
func applyOptions(fd, sockType, family int, opts map[string]int, skip ...string) error {
	for _, o := range sockOptions {
		v, ok := opts[o.name]
		if !ok || !o.appliesTo(sockType, family) || contains(skip, o.name) {
			continue
		}
		if o.opt == unix.SO_SNDBUF || o.opt == unix.SO_RCVBUF {
			v /= 2
		}
		if err := unix.SetsockoptInt(fd, o.level, o.opt, v); err != nil {
			return fmt.Errorf("setsockopt %s %d: %w", o.name, v, err)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
