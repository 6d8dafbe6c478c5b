package fds

import (
	"fmt"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// ptyKind is an end of a pseudo-terminal whose master and slave are both
// held by the job: Open MPI's mpirun reads each rank's output from one. A
// restore opens a new pair in the supervisor, gives it the terminal's
// settings and hands each end to the process that had it; the number is
// the kernel's choice. Data waiting in either direction cannot be read
// without taking it from the job, so a terminal with some is refused for
// the moment; nor can a slave whose master is outside the job (the user's
// own terminal, when it is not the supervisor's) be restored.
//
// Data written to one end and not yet read from the other is taken when
// the terminal is raw in that direction (cfmakeraw's settings, as launchers
// set for their ranks' output): it is read out once every process of the
// job is recorded and written back at once, and written again at restore;
// the terminal's processing would change it otherwise, and a terminal with
// unread data in a cooked direction is refused for the moment.
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
	c.ptys[pty.Index] = append(c.ptys[pty.Index], ptyEnd{pid: c.pid, fd: c.fd.Num, master: pty.Master,
		proc: c.p, record: pty, first: c.first})
	if !c.first {
		return nil
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
	// proc holds the descriptor; record is its image record, first says
	// it carries the state of its open file description.
	proc   *inject.Process
	record *image.Pty
	first  bool
}

// checkPtys refuses a terminal the job holds only the slave end of: its
// master, outside the job, cannot be restored. It then takes the data
// waiting at either end, every process of the job being recorded and
// stopped.
func (jd *Dumper) checkPtys() error {
	for idx, ends := range jd.ptys {
		var master, slave *ptyEnd
		for i := range ends {
			e := &ends[i]
			switch {
			case e.master && e.first && master == nil:
				master = e
			case !e.master && e.first && slave == nil:
				slave = e
			}
		}
		if master == nil {
			return fmt.Errorf("pid %d fd %d: terminal /dev/pts/%d: its other end (the master) is outside the job: not supported (run the job with its output to a file or a pipe)", ends[0].pid, ends[0].fd, idx)
		}
		if err := takePtyQueues(master, slave); err != nil {
			return fmt.Errorf("pid %d fd %d: %s: %w", master.pid, master.fd, ptyName(master.record), err)
		}
	}
	return nil
}

// takePtyQueues reads what waits at each end of a terminal into its
// record and writes it back from the other end, where the terminal is raw
// in that direction. slave is nil when the job holds no slave: then
// nothing can have been written to the master since.
func takePtyQueues(master, slave *ptyEnd) error {
	m, err := master.proc.PullFD(uint64(master.fd))
	if err != nil {
		return err
	}
	defer unix.Close(m)
	if slave == nil {
		if n, err := unix.IoctlGetInt(m, unix.TIOCINQ); err != nil || n > 0 {
			return fmt.Errorf("%d bytes written by a slave no process of the job holds wait to be read (%v): not supported", n, err)
		}
		return nil
	}
	s, err := slave.proc.PullFD(uint64(slave.fd))
	if err != nil {
		return err
	}
	defer unix.Close(s)
	t, err := unix.IoctlGetTermios(s, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("TCGETS: %w", err)
	}
	// The slave's output, read from the master, goes back through the
	// slave's output processing; its input, read from the slave, through
	// the master into the slave's input processing.
	for _, dir := range []struct {
		from, to int
		rec      *image.Pty
		raw      bool
		what     string
	}{
		{m, s, master.record, t.Oflag&unix.OPOST == 0, "output (with OPOST)"},
		{s, m, slave.record, rawInput(t), "input (not raw)"},
	} {
		n, err := unix.IoctlGetInt(dir.from, unix.TIOCINQ)
		if err != nil {
			return fmt.Errorf("TIOCINQ: %w", err)
		}
		if n == 0 {
			continue
		}
		if !dir.raw {
			return fmt.Errorf("%d bytes of the terminal's %s wait to be read: not supported; checkpoint again in a moment", n, dir.what)
		}
		q := make([]byte, n)
		for got := 0; got < n; {
			k, err := unix.Read(dir.from, q[got:])
			if err != nil || k == 0 {
				return fmt.Errorf("read the %d bytes waiting: %v", n, err)
			}
			got += k
		}
		if err := writeAll(dir.to, q); err != nil {
			return fmt.Errorf("put back the %d bytes waiting: %w", n, err)
		}
		dir.rec.Queue = q
	}
	return nil
}

// rawInput says whether the terminal passes input to the slave unchanged,
// as cfmakeraw leaves it: no line editing, echo, signals or translation.
func rawInput(t *unix.Termios) bool {
	return t.Lflag&(unix.ICANON|unix.ECHO|unix.ECHONL|unix.ISIG|unix.IEXTEN) == 0 &&
		t.Iflag&(unix.INLCR|unix.IGNCR|unix.ICRNL|unix.ISTRIP|unix.IXON|unix.PARMRK) == 0
}

// writeAll writes b to a terminal end, which has room: it held b before.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		b = b[n:]
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
	// masterQueue and slaveQueue wait at each end.
	masterQueue, slaveQueue []byte
	made                    bool
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
				pp.masterOFD, pp.masterQueue = f.OFD, f.Pty.Queue
			}
			if !f.Pty.Master && pp.slaveOFD == 0 {
				pp.slaveOFD, pp.slaveQueue = f.OFD, f.Pty.Queue
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
	if err := writeAll(slave, pp.masterQueue); err != nil {
		return fmt.Errorf("%s: the slave's output waiting: %w", ptyName(f.Pty), err)
	}
	if err := writeAll(master, pp.slaveQueue); err != nil {
		return fmt.Errorf("%s: the slave's input waiting: %w", ptyName(f.Pty), err)
	}
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
