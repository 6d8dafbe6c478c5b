package fds

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

const (
	tfdIocSetTicks      = 0x40085400 // TFD_IOC_SET_TICKS: _IOW('T', 0, u64)
	tfdTimerAbstime     = 1          // TFD_TIMER_ABSTIME
	tfdTimerCancelOnSet = 2          // TFD_TIMER_CANCEL_ON_SET
)

// timerfdKind is a timerfd, re-armed with the time it had left and its
// unread expirations.
type timerfdKind struct{}

func (timerfdKind) records() []image.FDKind { return []image.FDKind{image.FDTimerfd} }

func (timerfdKind) claims(c *dumpCtx) bool { return c.fd.Target == "anon_inode:[timerfd]" }

func (timerfdKind) dump(c *dumpCtx, out *image.FD) error {
	t, err := parseTimerfdInfo(c.fd.Info)
	if err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	out.Kind, out.Anon = image.FDTimerfd, &image.AnonFD{Timerfd: t}
	return nil
}

func (timerfdKind) restore(c *restoreCtx, f *image.FD) error {
	if f.Anon == nil || f.Anon.Timerfd == nil {
		return fmt.Errorf("timerfd descriptor without its state in the image")
	}
	fd, err := c.createTimerfd(f.Anon.Timerfd, f.Flags&unix.O_NONBLOCK != 0)
	if err != nil {
		return fmt.Errorf("timerfd: %w", err)
	}
	return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
}

// parseTimerfdInfo parses the timerfd lines of fdinfo:
//
//	clockid: 1
//	ticks: 0
//	settime flags: 00
//	it_value: (4, 999640095)
//	it_interval: (1, 5)
func parseTimerfdInfo(info []string) (*image.Timerfd, error) {
	t := &image.Timerfd{}
	seen := 0
	for _, l := range info {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "clockid":
			t.Clock, err = strconv.Atoi(v)
		case "ticks":
			t.Ticks, err = strconv.ParseUint(v, 10, 64)
		case "settime flags":
			var n int64
			n, err = strconv.ParseInt(v, 8, 32)
			t.SettimeFlags = int(n)
		case "it_value":
			t.ValueSec, t.ValueNsec, err = parseTimespecPair(v)
		case "it_interval":
			t.IntervalSec, t.IntervalNsec, err = parseTimespecPair(v)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("fdinfo %q: %w", l, err)
		}
		seen++
	}
	if seen != 5 {
		return nil, fmt.Errorf("fdinfo has %d of the 5 timerfd fields", seen)
	}
	return t, nil
}

// parseTimespecPair parses "(sec, nsec)".
func parseTimespecPair(v string) (int64, int64, error) {
	v = strings.TrimSuffix(strings.TrimPrefix(v, "("), ")")
	a, b, ok := strings.Cut(v, ",")
	if !ok {
		return 0, 0, fmt.Errorf("want (sec, nsec)")
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	if err != nil {
		return 0, 0, err
	}
	nsec, err := strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	return sec, nsec, err
}

// createTimerfd re-creates a timerfd armed with the time it had left
// (relative: the time the job was down does not count) and its unread
// expirations (TFD_IOC_SET_TICKS). A timer on the real-time clock set with
// TFD_TIMER_CANCEL_ON_SET keeps that flag: it is re-armed at the absolute
// time now + what was left, the only form the flag is accepted with.
func (c *restoreCtx) createTimerfd(t *image.Timerfd, nonblock bool) (uint64, error) {
	flags := uint64(unix.TFD_CLOEXEC)
	if nonblock {
		flags |= unix.TFD_NONBLOCK
	}
	fd, err := c.p.Main.Call("timerfd_create", unix.SYS_TIMERFD_CREATE, uint64(t.Clock), flags)
	if err != nil {
		return 0, err
	}
	fail := func(err error) (uint64, error) {
		c.p.Main.Syscall(unix.SYS_CLOSE, fd)
		return 0, err
	}
	if sec, nsec, armed := abi.TimeLeft(t.ValueSec, t.ValueNsec, t.IntervalSec, t.IntervalNsec); armed {
		var settime uint64
		if t.SettimeFlags&tfdTimerCancelOnSet != 0 && (t.Clock == unix.CLOCK_REALTIME || t.Clock == unix.CLOCK_REALTIME_ALARM) {
			// CLOCK_REALTIME is not namespaced: the supervisor's clock
			// is the job's.
			var now unix.Timespec
			if err := unix.ClockGettime(int32(t.Clock), &now); err != nil {
				return fail(fmt.Errorf("clock_gettime(%d): %w", t.Clock, err))
			}
			sec, nsec = sec+now.Sec, nsec+now.Nsec
			if nsec >= 1e9 {
				sec, nsec = sec+1, nsec-1e9
			}
			settime = tfdTimerAbstime | tfdTimerCancelOnSet
		}
		addr, err := c.p.ScratchAt(0, abi.ItimerspecSize)
		if err != nil {
			return fail(err)
		}
		if err := c.p.Write(addr, abi.Itimerspec(t.IntervalSec, t.IntervalNsec, sec, nsec)); err != nil {
			return fail(err)
		}
		if _, err := c.p.Main.Call("timerfd_settime", unix.SYS_TIMERFD_SETTIME, fd, settime, addr, 0); err != nil {
			return fail(err)
		}
	}
	if t.Ticks != 0 {
		addr, err := c.p.ScratchAt(0, 8)
		if err != nil {
			return fail(err)
		}
		b := make([]byte, 8)
		abi.PutU64(b, t.Ticks)
		if err := c.p.Write(addr, b); err != nil {
			return fail(err)
		}
		if _, err := c.p.Main.Call("ioctl(TFD_IOC_SET_TICKS)", unix.SYS_IOCTL, fd, tfdIocSetTicks, addr); err != nil {
			return fail(fmt.Errorf("%d unread expirations: %w", t.Ticks, err))
		}
	}
	return fd, nil
}
