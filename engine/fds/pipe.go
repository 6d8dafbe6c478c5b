package fds

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

// pipeKind is one end of an anonymous pipe. The pipe is created, with its
// buffered data, in the first process restored that has an end of it; the
// other end is kept on a spare descriptor, from which the process that had
// it takes it.
type pipeKind struct{}

func (pipeKind) records() []image.FDKind { return []image.FDKind{image.FDPipe} }

func (pipeKind) claims(c *dumpCtx) bool { return strings.HasPrefix(c.fd.Target, "pipe:[") }

func (pipeKind) dump(c *dumpCtx, out *image.FD) error {
	t := c.fd.Target
	ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(t, "pipe:["), "]"), 10, 64)
	if err != nil {
		return fmt.Errorf("pipe %q: %w", t, err)
	}
	out.Kind = image.FDPipe
	return c.dumpPipe(ino, out)
}

func (pipeKind) restore(c *restoreCtx, f *image.FD) error { return c.restorePipe(f) }

// fifoKind is one end of a named pipe, opened again by its path; the data
// buffered in it is recorded as for a pipe.
type fifoKind struct{}

func (fifoKind) records() []image.FDKind { return []image.FDKind{image.FDFifo} }

func (fifoKind) claims(c *dumpCtx) bool { return c.st != nil && c.st.Mode().Type() == os.ModeNamedPipe }

func (fifoKind) dump(c *dumpCtx, out *image.FD) error {
	out.Kind, out.Path = image.FDFifo, c.fd.Target
	return c.dumpPipe(c.st.Sys().(*syscall.Stat_t).Ino, out)
}

func (fifoKind) restore(c *restoreCtx, f *image.FD) error { return c.restoreFifo(f) }

// dumpPipe records a pipe or FIFO end, and the data buffered in the pipe
// the first time the pipe is met.
func (c *dumpCtx) dumpPipe(ino uint64, out *image.FD) error {
	pp := &image.Pipe{Inode: ino}
	switch out.Flags & unix.O_ACCMODE {
	case unix.O_RDONLY:
		pp.ReadEnd = true
	case unix.O_WRONLY:
		pp.WriteEnd = true
	default:
		pp.ReadEnd, pp.WriteEnd = true, true
	}
	out.Pipe = pp
	if c.pipes[ino] {
		return nil
	}
	c.pipes[ino] = true
	size, data, err := c.peeker.peek(c.procPath(), out.Flags&unix.O_DIRECT != 0)
	if err != nil {
		return fmt.Errorf("pipe:[%d]: %w", ino, err)
	}
	pp.Size, pp.Data = size, data
	return nil
}

// pipePeeker reads what is buffered in the job's pipes without taking it
// out: the pipe is opened for reading on its own, and its buffers are
// duplicated with tee into a scratch pipe of the supervisor's, one for the
// whole checkpoint. A user's pipes share a quota (fs.pipe-user-pages-soft):
// a job near it leaves the scratch pipe too small to grow, and then the
// data is read out and written back into the same pipe, whose room it
// takes up again exactly (the job is stopped meanwhile).
type pipePeeker struct {
	r, w     int // the scratch pipe; -1 until needed
	capacity int
}

func newPipePeeker() *pipePeeker { return &pipePeeker{r: -1, w: -1} }

// close releases the scratch pipe.
func (pk *pipePeeker) close() {
	if pk.r >= 0 {
		unix.Close(pk.r)
		unix.Close(pk.w)
		pk.r, pk.w = -1, -1
	}
}

// peek returns the size of the pipe behind path (a /proc fd link) and the
// data buffered in it. packet says the end is in packet mode (O_DIRECT),
// whose message boundaries only tee keeps.
func (pk *pipePeeker) peek(path string, packet bool) (size int, data []byte, err error) {
	src, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("open for reading: %w", err)
	}
	defer unix.Close(src)
	size, err = unix.FcntlInt(uintptr(src), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("F_GETPIPE_SZ: %w", err)
	}
	n, err := unix.IoctlGetInt(src, unix.TIOCINQ)
	if err != nil {
		return 0, nil, fmt.Errorf("FIONREAD: %w", err)
	}
	if n == 0 {
		return size, nil, nil
	}
	roomErr := pk.room(n)
	if roomErr == nil {
		data, err = pk.tee(src, n)
		return size, data, err
	}
	if packet {
		return 0, nil, fmt.Errorf("a packet-mode pipe holding %d bytes, and no room to copy them: %w", n, roomErr)
	}
	logrus.Debugf("%s: %v; its %d bytes are read out and written back", path, roomErr, n)
	data, err = drainAndRefill(src, path, n)
	return size, data, err
}

// room makes the scratch pipe hold at least n bytes.
func (pk *pipePeeker) room(n int) error {
	if pk.r < 0 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			return err
		}
		pk.r, pk.w = p[0], p[1]
		c, err := unix.FcntlInt(uintptr(pk.w), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return fmt.Errorf("F_GETPIPE_SZ: %w", err)
		}
		pk.capacity = c
	}
	if pk.capacity >= n {
		return nil
	}
	c, err := unix.FcntlInt(uintptr(pk.w), unix.F_SETPIPE_SZ, n)
	if err != nil {
		return fmt.Errorf("size a pipe for %d bytes (the user's pipe quota, fs.pipe-user-pages-soft?): %w", n, err)
	}
	pk.capacity = c
	return nil
}

// tee copies the n buffered bytes of src through the scratch pipe.
func (pk *pipePeeker) tee(src, n int) ([]byte, error) {
	// One tee: a second one would copy the same data again.
	got, err := unix.Tee(src, pk.w, n, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("tee: %w", err)
	}
	data := make([]byte, n)
	off := 0
	for off < int(got) {
		m, err := unix.Read(pk.r, data[off:got])
		if err != nil {
			return nil, fmt.Errorf("read copied data: %w", err)
		}
		off += m
	}
	if int(got) != n {
		return nil, fmt.Errorf("tee copied %d of %d buffered bytes", got, n)
	}
	return data, nil
}

// drainAndRefill reads the n buffered bytes out of the pipe and writes
// them back through a writer opened on the same pipe: the pipe is as it
// was, as far as its reader can tell. The writer is opened first, so that
// nothing is taken out of a pipe that could not be refilled.
func drainAndRefill(src int, path string, n int) ([]byte, error) {
	w, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open for writing the data back: %w", err)
	}
	defer unix.Close(w)
	data := make([]byte, n)
	got := 0
	var rerr error
	for got < n {
		m, err := unix.Read(src, data[got:])
		if err != nil || m == 0 {
			rerr = fmt.Errorf("read %d of %d buffered bytes: %v", got, n, err)
			break
		}
		got += m
	}
	for off := 0; off < got; {
		m, err := unix.Write(w, data[off:got])
		if err != nil {
			return nil, fmt.Errorf("write %d buffered bytes back into the pipe: %w (%d were lost)", got, err, got-off)
		}
		off += m
	}
	if rerr != nil {
		return nil, rerr
	}
	return data, nil
}

// fillPipe sizes a restored pipe and puts its buffered data back, through
// a copy of its write end (or of a read-write FIFO descriptor) taken into
// the supervisor.
func fillPipe(p *inject.Process, fd uint64, pp *image.Pipe) error {
	local, err := p.PullFD(fd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	if err := sizePipe(local, pp.Size, len(pp.Data)); err != nil {
		// The user's other pipes, not the image, are in the way: an
		// older generation would meet the same quota.
		return &node.Error{Err: fmt.Errorf("pipe:[%d]: %w", pp.Inode, err)}
	}
	for off := 0; off < len(pp.Data); {
		n, err := unix.Write(local, pp.Data[off:])
		if err != nil {
			return fmt.Errorf("refill %d bytes: %w", len(pp.Data), err)
		}
		off += n
	}
	return nil
}

// sizePipe gives a restored pipe its recorded size. Where the user's pipe
// quota (fs.pipe-user-pages-soft) does not allow that, a pipe that holds
// the buffered data is enough: the job can tell only by F_GETPIPE_SZ.
func sizePipe(fd, size, buffered int) error {
	cur, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return fmt.Errorf("F_GETPIPE_SZ: %w", err)
	}
	if size <= 0 || cur == size {
		return nil
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, size)
	if err == nil || cur >= buffered && cur < size {
		if err != nil {
			logrus.Debugf("pipe kept at %d bytes instead of %d (F_SETPIPE_SZ: %v): it holds its %d buffered bytes", cur, size, err, buffered)
		}
		return nil
	}
	if _, err2 := unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, buffered); err2 == nil {
		logrus.Debugf("pipe sized for its %d buffered bytes instead of %d (F_SETPIPE_SZ %d: %v)", buffered, size, size, err)
		return nil
	}
	if cur >= buffered {
		return nil // shrinking was refused: bigger than recorded is harmless
	}
	return fmt.Errorf("it held %d bytes, and the user's pipe quota (fs.pipe-user-pages-soft) lets no pipe grow to hold them (F_SETPIPE_SZ %d: %w): the user's other processes hold too many pipes; end some, or raise fs.pipe-user-pages-soft, and restart again", buffered, size, err)
}

// pipeInfo is what the restore knows about one pipe across the job.
type pipeInfo struct {
	data              *image.Pipe // the record carrying the buffered data
	readOFD, writeOFD int
}

// pipesOf collects the pipes of the image: the ends' open file
// descriptions and the record with the data.
func pipesOf(procs []*image.Process) (map[uint64]*pipeInfo, error) {
	out := map[uint64]*pipeInfo{}
	for _, p := range procs {
		for i := range p.Files {
			f := &p.Files[i]
			if f.Pipe == nil || f.Kind != image.FDPipe && f.Kind != image.FDFifo {
				continue
			}
			pi := out[f.Pipe.Inode]
			if pi == nil {
				pi = &pipeInfo{}
				out[f.Pipe.Inode] = pi
			}
			if pi.data == nil || len(f.Pipe.Data) > 0 {
				pi.data = f.Pipe
			}
			if f.Kind != image.FDPipe {
				continue
			}
			for _, end := range []struct {
				is  bool
				ofd *int
			}{{f.Pipe.ReadEnd, &pi.readOFD}, {f.Pipe.WriteEnd, &pi.writeOFD}} {
				if !end.is {
					continue
				}
				if *end.ofd != 0 && *end.ofd != f.OFD {
					return nil, fmt.Errorf("pid %d fd %d: pipe:[%d] has more than one open file description for one end (re-opened through /proc): not supported", p.PID, f.Num, f.Pipe.Inode)
				}
				*end.ofd = f.OFD
			}
		}
	}
	return out, nil
}

// restorePipe creates the pipe that f is an end of, with its buffered
// data. The other end is kept on a spare descriptor, from which the
// process that had it takes it; nobody having it, it is closed after the
// restore (a pipe whose writers are gone reads its data, then EOF).
func (c *restoreCtx) restorePipe(f *image.FD) error {
	if f.Pipe == nil {
		return fmt.Errorf("pipe descriptor without its pipe in the image")
	}
	pi := c.pipes[f.Pipe.Inode]
	if pi == nil {
		return fmt.Errorf("pipe:[%d] is missing from the image's pipe table", f.Pipe.Inode)
	}
	addr, err := c.p.ScratchAt(0, 8)
	if err != nil {
		return err
	}
	if _, err := c.p.Main.Call("pipe2", unix.SYS_PIPE2, addr, unix.O_CLOEXEC); err != nil {
		return err
	}
	b := make([]byte, 8)
	if err := c.p.Read(addr, b); err != nil {
		return err
	}
	readFD, writeFD := uint64(binary.LittleEndian.Uint32(b[0:])), uint64(binary.LittleEndian.Uint32(b[4:]))
	if err := fillPipe(c.p, writeFD, pi.data); err != nil {
		return err
	}
	mine, other, otherOFD := writeFD, readFD, pi.readOFD
	if f.Pipe.ReadEnd {
		mine, other, otherOFD = readFD, writeFD, pi.writeOFD
	}
	h, err := c.keepHigh(other)
	if err != nil {
		return err
	}
	if otherOFD != 0 {
		c.holders[otherOFD] = h
	}
	return c.finishEnd(mine, f)
}

// restoreFifo opens a FIFO end by its path. The first time a FIFO is met, a
// read-write descriptor is opened and kept until every process has its
// files: it lets the other ends open without blocking and puts the buffered
// data back.
func (c *restoreCtx) restoreFifo(f *image.FD) error {
	if f.Pipe == nil {
		return fmt.Errorf("FIFO descriptor without its pipe in the image")
	}
	if _, ok := c.fifoKeepers[f.Pipe.Inode]; !ok {
		keeper, err := c.p.Openat(f.Path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open FIFO %s: %w", f.Path, err)
		}
		h, err := c.keepHigh(keeper)
		if err != nil {
			return err
		}
		c.fifoKeepers[f.Pipe.Inode] = h
		if pi := c.pipes[f.Pipe.Inode]; pi != nil {
			if err := fillPipe(c.p, h.FD, pi.data); err != nil {
				return err
			}
		}
	}
	fd, err := c.p.Openat(f.Path, uint64(f.Flags&unix.O_ACCMODE)|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open FIFO %s: %w", f.Path, err)
	}
	return c.finishEnd(fd, f)
}
