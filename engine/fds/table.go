package fds

import (
	"fmt"
	"os"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inetsock"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/unixsock"
)

// Stdio describes the supervisor's own standard streams, which the job
// inherited. A job fd that is one of them is re-attached to the restarting
// supervisor's stream instead of being re-opened.
type Stdio struct {
	// PID is the process whose fds 0-2 are the streams (the supervisor).
	PID int
}

// DumpOptions are what a Dumper needs from the checkpoint.
type DumpOptions struct {
	// Writer receives the data files of memfds and deleted files.
	Writer *image.Writer
	Stdio  Stdio
	// Container says the job runs in a container, whose unix sockets may
	// be bound to paths the host does not have.
	Container bool
}

// Dumper records the descriptor tables of a job's processes, one process
// after another, for one checkpoint.
type Dumper struct {
	opts DumpOptions
	// ofds identifies open file descriptions across the job.
	ofds *ofdTable
	// pipes are the pipes whose buffered data is already recorded;
	// peeker reads that data.
	pipes  map[uint64]bool
	peeker *pipePeeker
	// socks and sockInfo are the unix sockets of the job's network
	// namespace, listed once per checkpoint; unixSeen those the job holds.
	socks    map[uint64]*image.UnixSocket
	sockInfo map[uint64]unixsock.Info
	unixSeen map[uint64]bool
	// inet are the job's TCP and UDP sockets, one per open file
	// description, paired once every process is recorded.
	inet []inetsock.Ref
	// ptys are the ends of pseudo-terminals the job holds, by number.
	ptys map[int][]ptyEnd
}

// NewDumper starts the dump of a job's descriptors. Close releases it.
func NewDumper(opts DumpOptions) *Dumper {
	return &Dumper{opts: opts, ofds: newOFDTable(), pipes: map[uint64]bool{},
		peeker: newPipePeeker(), unixSeen: map[uint64]bool{}, ptys: map[int][]ptyEnd{}}
}

// Close releases what the dump held for the whole job.
func (d *Dumper) Close() { d.peeker.close() }

// dumpCtx is the descriptor being dumped.
type dumpCtx struct {
	*Dumper
	p *inject.Process
	// pid is the process's number in the job, for messages.
	pid int
	fd  *proc.FD
	// first says this is the first descriptor of its open file
	// description: state the description holds is dumped with it.
	first bool
	// st is the file behind a descriptor whose link is a path; nil for
	// pipes, sockets and anonymous inodes.
	st os.FileInfo
}

// Dump records the file descriptors of process p (recorded as img) in
// img.Files. Kinds that cannot be restored yet fail the checkpoint with
// the pid, fd and kind named.
func (d *Dumper) Dump(p *inject.Process, img *image.Process) error {
	fds, err := proc.ReadFDs(p.PID)
	if err != nil {
		return err
	}
	for i := range fds {
		fd := &fds[i]
		out := image.FD{Num: fd.Num, Flags: fd.Flags, Pos: fd.Pos}
		c := &dumpCtx{Dumper: d, p: p, pid: img.PID, fd: fd}
		if out.OFD, c.first, err = d.ofds.id(p.PID, fd.Num); err != nil {
			return fmt.Errorf("pid %d fd %d: %w", img.PID, fd.Num, err)
		}
		if err := c.dump(&out); err != nil {
			return fmt.Errorf("pid %d fd %d: %w", img.PID, fd.Num, err)
		}
		img.Files = append(img.Files, out)
	}
	return nil
}

func (c *dumpCtx) dump(out *image.FD) error {
	if strings.HasPrefix(c.fd.Target, "/") {
		st, err := os.Stat(c.procPath())
		if err != nil {
			return fmt.Errorf("stat %s: %w", c.fd.Target, err)
		}
		c.st = st
	}
	k, err := claim(c)
	if err != nil {
		return err
	}
	return k.dump(c, out)
}

// procPath is the descriptor's link in /proc, through which the supervisor
// opens the file for itself.
func (c *dumpCtx) procPath() string {
	return fmt.Sprintf("/proc/%d/fd/%d", c.p.PID, c.fd.Num)
}
