package fds

import (
	"fmt"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// ptyKind is an end of a pseudo-terminal whose master and slave are both
// held by the job: Open MPI's mpirun reads each rank's output from one. A
// restore opens a new pair in the supervisor, gives it the terminal's
// settings and hands each end to the process that had it; the number is
// the kernel's choice. Data waiting in either direction cannot be read
// without taking it from the job, so a terminal with some is refused for
// the moment; nor can a slave whose master is outside the job (the user's
// own terminal, when it is not the supervisor's) be restored.
type ptyKind struct{}

var slavePath = regexp.MustCompile(`^/dev/pts/([0-9]+)$`)

func (ptyKind) records() []image.FDKind { return []image.FDKind{image.FDPty} }

func (ptyKind) claims(c *dumpCtx) bool {
	return c.fd.Target == "/dev/ptmx" || slavePath.MatchString(c.fd.Target)
}

func (ptyKind) dump(c *dumpCtx, out *image.FD) error {
	local, err := c.p.PullFD(uint64(c.fd.Num))
	if err != nil {
		return err
	}
	defer unix.Close(local)
	pty := &image.Pty{Master: c.fd.Target == "/dev/ptmx"}
	if pty.Master {
		n, err := unix.IoctlGetUint32(local, unix.TIOCGPTN)
		if err != nil {
			return fmt.Errorf("/dev/ptmx: TIOCGPTN: %w", err)
		}
		pty.Index = int(n)
	} else {
		pty.Index, _ = strconv.Atoi(slavePath.FindStringSubmatch(c.fd.Target)[1])
	}
	out.Kind, out.Pty = image.FDPty, pty
	c.ptys[pty.Index] = append(c.ptys[pty.Index], ptyEnd{pid: c.pid, fd: c.fd.Num, master: pty.Master})
	if !c.first {
		return nil
	}
	if n, err := unix.IoctlGetInt(local, unix.TIOCINQ); err != nil {
		return fmt.Errorf("%s: TIOCINQ: %w", ptyName(pty), err)
	} else if n > 0 {
		return fmt.Errorf("%s: %d bytes written to the terminal wait to be read: not supported; checkpoint again in a moment", ptyName(pty), n)
	}
	t, err := unix.IoctlGetTermios(local, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("%s: TCGETS: %w", ptyName(pty), err)
	}
	pty.Termios = &image.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag,
		Line: t.Line, Cc: t.Cc, Ispeed: t.Ispeed, Ospeed: t.Ospeed}
	ws, err := unix.IoctlGetWinsize(local, unix.TIOCGWINSZ)
	if err != nil {
		return fmt.Errorf("%s: TIOCGWINSZ: %w", ptyName(pty), err)
	}
	pty.Winsize = [4]uint16{ws.Row, ws.Col, ws.Xpixel, ws.Ypixel}
	return nil
}

// ptyEnd is a descriptor of a pseudo-terminal seen by a checkpoint.
type ptyEnd struct {
	pid, fd int
	master  bool
}

// checkPtys refuses a terminal the job holds only the slave end of: its
// master, outside the job, cannot be restored.
func (jd *Dumper) checkPtys() error {
	for idx, ends := range jd.ptys {
		master := false
		for _, e := range ends {
			master = master || e.master
		}
		if !master {
			return fmt.Errorf("pid %d fd %d: terminal /dev/pts/%d: its other end (the master) is outside the job: not supported (run the job with its output to a file or a pipe)", ends[0].pid, ends[0].fd, idx)
		}
	}
	return nil
}

func ptyName(p *image.Pty) string {
	if p.Master {
		return fmt.Sprintf("/dev/ptmx (of /dev/pts/%d)", p.Index)
	}
	return fmt.Sprintf("/dev/pts/%d", p.Index)
}

// ptyPair is a terminal of the image: the open file descriptions of its
// ends (0 when the job holds none) and whether it was made again.
type ptyPair struct {
	masterOFD, slaveOFD int
	settings            *image.Pty
	made                bool
}

// ptysOf indexes the image's terminals by number.
func ptysOf(procs []*image.Process) map[int]*ptyPair {
	out := map[int]*ptyPair{}
	for _, p := range procs {
		for i := range p.Files {
			f := &p.Files[i]
			if f.Kind != image.FDPty || f.Pty == nil {
				continue
			}
			pp := out[f.Pty.Index]
			if pp == nil {
				pp = &ptyPair{}
				out[f.Pty.Index] = pp
			}
			if f.Pty.Master && pp.masterOFD == 0 {
				pp.masterOFD = f.OFD
			}
			if !f.Pty.Master && pp.slaveOFD == 0 {
				pp.slaveOFD = f.OFD
			}
			if f.Pty.Termios != nil {
				pp.settings = f.Pty
			}
		}
	}
	return out
}

func (ptyKind) restore(c *restoreCtx, f *image.FD) error {
	pp := c.ptys[f.Pty.Index]
	if pp == nil || pp.made || pp.settings == nil {
		return fmt.Errorf("%s: the terminal's settings are not in the image, or it was restored on its own", ptyName(f.Pty))
	}
	master, slave, err := openPty(pp.settings)
	if err != nil {
		return err
	}
	defer unix.Close(master)
	defer unix.Close(slave)
	pp.made = true
	this, other, otherOFD := master, slave, pp.slaveOFD
	if !f.Pty.Master {
		this, other, otherOFD = slave, master, pp.masterOFD
	}
	local := []int{this}
	if otherOFD != 0 {
		local = append(local, other)
	}
	got, err := c.p.PushFDs(local)
	if err != nil {
		return fmt.Errorf("%s: %w", ptyName(f.Pty), err)
	}
	if len(got) > 1 {
		h, err := c.keepHigh(got[1])
		if err != nil {
			return err
		}
		c.holders[otherOFD] = h
	}
	return c.finishEnd(got[0], f)
}

// openPty opens a new pseudo-terminal in the supervisor with the recorded
// settings and returns its master and slave.
func openPty(p *image.Pty) (master, slave int, err error) {
	master, err = unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	fail := func(err error) (int, int, error) {
		unix.Close(master)
		return -1, -1, err
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fail(fmt.Errorf("unlock pseudo-terminal: %w", err))
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		return fail(fmt.Errorf("TIOCGPTN: %w", err))
	}
	slave, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	t := p.Termios
	termios := &unix.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag,
		Line: t.Line, Cc: t.Cc, Ispeed: t.Ispeed, Ospeed: t.Ospeed}
	ws := &unix.Winsize{Row: p.Winsize[0], Col: p.Winsize[1], Xpixel: p.Winsize[2], Ypixel: p.Winsize[3]}
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, termios); err != nil {
		unix.Close(slave)
		return fail(fmt.Errorf("TCSETS: %w", err))
	}
	if err := unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, ws); err != nil {
		unix.Close(slave)
		return fail(fmt.Errorf("TIOCSWINSZ: %w", err))
	}
	return master, slave, nil
}
