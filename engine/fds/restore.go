package fds

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inetsock"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
)

// Restorer re-creates the descriptor tables of a job's processes, one
// process after another in image order, and hands open file descriptions
// shared between processes from the process that created them to the
// others.
type Restorer struct {
	// gen is the generation memfd and deleted-file contents are read from.
	gen *image.Generation
	// holders are where each restored open file description can be
	// taken from, by OFD id.
	holders map[int]Holder
	// shmem holds a descriptor of each restored shared memory object, by
	// its image id: a memfd both open and mapped is one file.
	shmem map[string]Holder
	// kept are descriptors held only for the restore, closed once every
	// process has its files (Release).
	kept []Holder
	// pipes are the job's pipes and FIFOs by inode; fifoKeepers the
	// read-write descriptor kept open on each restored FIFO.
	pipes       map[uint64]*pipeInfo
	fifoKeepers map[uint64]Holder
	// unix are the job's unix sockets by inode.
	unix map[uint64]*image.FD
	// inet re-creates the job's TCP and UDP sockets.
	inet inetsock.Finisher
	// ptys are the job's pseudo-terminals by number.
	ptys map[int]*ptyPair
}

// NewRestorer prepares the restore of the descriptors of procs, whose
// contents are in gen.
func NewRestorer(gen *image.Generation, procs []*image.Process) (*Restorer, error) {
	pipes, err := pipesOf(procs)
	if err != nil {
		return nil, err
	}
	return &Restorer{gen: gen, holders: map[int]Holder{}, shmem: map[string]Holder{},
		pipes: pipes, fifoKeepers: map[uint64]Holder{}, unix: unixOf(procs), ptys: ptysOf(procs)}, nil
}

// restoreCtx is the process whose descriptors are being restored.
type restoreCtx struct {
	*Restorer
	p   *inject.Process
	img *image.Process
	// stdio are the restarting supervisor's streams, parked above the
	// image's descriptors.
	stdio [3]uint64
	// finish runs once every descriptor of the process is back.
	finish []func() error
}

// Restore re-creates the descriptor table of process p, recorded as img.
// The stub starts with the restarting supervisor's stdin, stdout and stderr
// on 0-2; they are first moved above every fd the image uses, then each
// recorded fd is opened and moved to its number.
func (jr *Restorer) Restore(p *inject.Process, img *image.Process) error {
	c := &restoreCtx{Restorer: jr, p: p, img: img}
	files := append([]image.FD(nil), img.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Num < files[j].Num })
	top := Top(img)
	for s := 0; s < 3; s++ {
		fd, err := p.Main.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, uint64(s), unix.F_DUPFD_CLOEXEC, uint64(top+s))
		if err != nil {
			return fmt.Errorf("stdio %d: %w", s, err)
		}
		c.stdio[s] = fd
		if _, err := p.Main.Call("close", unix.SYS_CLOSE, uint64(s)); err != nil {
			return err
		}
	}
	for i := range files {
		f := &files[i]
		if err := c.restore(f); err != nil {
			return fmt.Errorf("fd %d (%s): %w", f.Num, f.Kind, err)
		}
	}
	for _, fn := range c.finish {
		if err := fn(); err != nil {
			return err
		}
	}
	for _, fd := range c.stdio {
		if _, err := p.Main.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return nil
}

// restore re-creates one descriptor: by its kind the first time its open
// file description is met, as a copy of the first one after that.
func (c *restoreCtx) restore(f *image.FD) error {
	if h, shared := c.holders[f.OFD]; shared && f.Kind != image.FDStdio && f.OFD != 0 {
		fd, err := c.Fetch(c.p, h)
		if err != nil {
			return err
		}
		return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
	}
	k := byRecord[f.Kind]
	if k == nil {
		return fmt.Errorf("restoring %s descriptors is not supported", f.Kind)
	}
	if err := k.restore(c, f); err != nil {
		return err
	}
	if f.OFD != 0 && f.Kind != image.FDStdio {
		c.holders[f.OFD] = Holder{P: c.p, PID: c.img.PID, FD: uint64(f.Num)}
	}
	return nil
}

// Top is the first descriptor number above every one img uses. Restore
// parks the standard streams on the three numbers from there, KeepHigh
// the restore's own descriptors above those.
func Top(img *image.Process) int {
	top := 3
	for _, f := range img.Files {
		top = max(top, f.Num+1)
	}
	return top
}

// moveHigh moves a descriptor the restore keeps for itself above every
// number img uses, so that no recorded descriptor lands on it.
func moveHigh(p *inject.Process, img *image.Process, fd uint64) (uint64, error) {
	nfd, err := p.Main.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, uint64(Top(img)+3))
	if err != nil {
		return 0, err
	}
	if _, err := p.Main.Call("close", unix.SYS_CLOSE, fd); err != nil {
		return 0, err
	}
	return nfd, nil
}

// moveFD puts fd on number num with the recorded close-on-exec flag,
// closing the original when it was a temporary.
func (c *restoreCtx) moveFD(fd uint64, num int, cloexec, closeOld bool) error {
	var flags uint64
	if cloexec {
		flags = unix.O_CLOEXEC
	}
	if fd == uint64(num) {
		// Opened right on its number (with O_CLOEXEC): only the flag
		// may need fixing.
		if !cloexec {
			_, err := c.p.Main.Call("fcntl(F_SETFD)", unix.SYS_FCNTL, fd, unix.F_SETFD, 0)
			return err
		}
		return nil
	}
	if _, err := c.p.Main.Call("dup3", unix.SYS_DUP3, fd, uint64(num), flags); err != nil {
		return err
	}
	if closeOld {
		if _, err := c.p.Main.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return nil
}

// finishEnd gives a new pipe, FIFO or socket descriptor its recorded status
// flags (O_NONBLOCK...) and number.
func (c *restoreCtx) finishEnd(fd uint64, f *image.FD) error {
	const settable = unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME | unix.O_NONBLOCK
	if _, err := c.p.Main.Call("fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, uint64(f.Flags&settable)); err != nil {
		return err
	}
	return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
}

func (c *restoreCtx) keepHigh(fd uint64) (Holder, error) { return c.KeepHigh(c.p, c.img, fd) }

// KeepHigh moves descriptor fd of process p (recorded as img) above the
// image's numbers and keeps it until Release, for another process (or a
// later descriptor of this one) to take.
func (jr *Restorer) KeepHigh(p *inject.Process, img *image.Process, fd uint64) (Holder, error) {
	fd, err := moveHigh(p, img, fd)
	if err != nil {
		return Holder{}, err
	}
	h := Holder{P: p, PID: img.PID, FD: fd}
	jr.kept = append(jr.kept, h)
	return h, nil
}
