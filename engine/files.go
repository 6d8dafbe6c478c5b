package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fileid"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// devicesReopened are the character devices a restore opens again by path.
var devicesReopened = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/random": true, "/dev/urandom": true, "/dev/full": true,
}

// Stdio describes the supervisor's own standard streams, which the job
// inherited. A job fd that is one of them is re-attached to the restarting
// supervisor's stream instead of being re-opened.
type Stdio struct {
	// PID is the process whose fds 0-2 are the streams (the supervisor).
	PID int
}

// dumpFiles records the file descriptors of a process. Kinds that cannot be
// restored yet fail the checkpoint with the pid, fd and kind named.
func (jd *jobDump) dumpFiles(rem *inject.Process, p *image.Process) error {
	hostPID := rem.PID
	fds, err := proc.ReadFDs(hostPID)
	if err != nil {
		return err
	}
	stdio := jd.opts.Stdio
	for _, fd := range fds {
		out := image.FD{Num: fd.Num, Flags: fd.Flags, Pos: fd.Pos}
		id, first, err := jd.files.id(hostPID, fd.Num)
		if err != nil {
			return fmt.Errorf("pid %d fd %d: %w", p.PID, fd.Num, err)
		}
		out.OFD = id
		if stdio.PID != 0 {
			for s := 0; s <= 2; s++ {
				if inject.SameOpenFile(stdio.PID, s, hostPID, fd.Num) {
					out.Kind, out.Stdio = image.FDStdio, s
					break
				}
			}
		}
		if out.Kind == "" {
			if err := jd.classifyFD(rem, &fd, &out, first); err != nil {
				return fmt.Errorf("pid %d fd %d: %w", p.PID, fd.Num, err)
			}
		}
		p.Files = append(p.Files, out)
	}
	return nil
}

// classifyFD fills in what re-creates fd. State held by the open file
// description itself (pipe data, counters) is read only for the first fd
// of each description.
func (jd *jobDump) classifyFD(rem *inject.Process, fd *proc.FD, out *image.FD, first bool) error {
	hostPID := rem.PID
	t := fd.Target
	switch {
	case devicesReopened[t]:
		out.Kind, out.Path = image.FDDevice, t
	case t == "anon_inode:[eventfd]":
		out.Kind = image.FDEventfd
		v, ok := fd.InfoValue("eventfd-count")
		if !ok {
			return fmt.Errorf("eventfd without eventfd-count in fdinfo")
		}
		n, err := strconv.ParseUint(v, 16, 64)
		if err != nil {
			return fmt.Errorf("eventfd-count %q: %w", v, err)
		}
		out.EventfdCount = n
		if s, ok := fd.InfoValue("eventfd-semaphore"); ok && s == "1" {
			out.EventfdSemaphore = true
		}
	case t == "anon_inode:[eventpoll]":
		out.Kind = image.FDEpoll
		entries, err := epollEntries(fd)
		if err != nil {
			return err
		}
		out.Epoll = entries
	case strings.HasPrefix(t, "pipe:["):
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(t, "pipe:["), "]"), 10, 64)
		if err != nil {
			return fmt.Errorf("pipe %q: %w", t, err)
		}
		out.Kind = image.FDPipe
		return jd.dumpPipe(hostPID, fd.Num, ino, out)
	case strings.HasPrefix(t, "socket:["):
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(t, "socket:["), "]"), 10, 64)
		if err != nil {
			return fmt.Errorf("socket %q: %w", t, err)
		}
		return jd.dumpSocket(rem, fd.Num, ino, out, first)
	case strings.HasPrefix(t, "anon_inode:"):
		err := dumpAnonFD(hostPID, fd, out)
		if errors.Is(err, ErrNotAnonFD) {
			return fmt.Errorf("%s: this kind of file descriptor is not supported yet", strings.TrimPrefix(t, "anon_inode:"))
		}
		return err
	case strings.HasSuffix(t, " (deleted)") || strings.HasPrefix(t, "/memfd:"):
		if !first {
			// Shared with an fd already dumped, which holds the contents.
			kind, _, ok := contentsKind(t)
			if !ok {
				return fmt.Errorf("%s: this kind of file descriptor is not supported yet", t)
			}
			out.Kind = kind
			return nil
		}
		return dumpFileContents(hostPID, fd, out, jd.opts.Writer)
	case strings.HasPrefix(t, "/"):
		st, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%d", hostPID, fd.Num))
		if err != nil {
			return fmt.Errorf("stat %s: %w", t, err)
		}
		if st.Mode().Type() == os.ModeNamedPipe {
			out.Kind, out.Path = image.FDFifo, t
			return jd.dumpPipe(hostPID, fd.Num, st.Sys().(*syscall.Stat_t).Ino, out)
		}
		if !st.Mode().IsRegular() && !st.IsDir() {
			return fmt.Errorf("%s (%s): this kind of file is not supported yet", t, st.Mode().Type())
		}
		id, err := fileid.OfProc(hostPID, t)
		if err != nil {
			return err
		}
		out.Kind, out.Path, out.File = image.FDFile, t, id
	default:
		return fmt.Errorf("%s: this kind of file descriptor is not supported yet", t)
	}
	return nil
}

// epollEntries parses the "tfd: N events: X data: Y" lines of an epoll fdinfo.
func epollEntries(fd *proc.FD) ([]image.EpollEntry, error) {
	var out []image.EpollEntry
	for _, l := range fd.Info {
		if !strings.HasPrefix(l, "tfd:") {
			continue
		}
		f := strings.Fields(l)
		var e image.EpollEntry
		for i := 0; i+1 < len(f); i += 2 {
			switch f[i] {
			case "tfd:":
				n, err := strconv.Atoi(f[i+1])
				if err != nil {
					return nil, fmt.Errorf("epoll fdinfo %q: %w", l, err)
				}
				e.FD = n
			case "events:":
				n, err := strconv.ParseUint(f[i+1], 16, 32)
				if err != nil {
					return nil, fmt.Errorf("epoll fdinfo %q: %w", l, err)
				}
				e.Events = uint32(n)
			case "data:":
				n, err := strconv.ParseUint(f[i+1], 16, 64)
				if err != nil {
					return nil, fmt.Errorf("epoll fdinfo %q: %w", l, err)
				}
				e.Data = n
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// writable reports whether open flags allow writing.
func writable(flags int) bool {
	acc := flags & unix.O_ACCMODE
	return acc == unix.O_WRONLY || acc == unix.O_RDWR
}

// rollbackFiles cuts files the job was writing back to their length at
// checkpoint time, so output the job wrote after the checkpoint, and will
// write again after the restart, is not there twice. A file is never cut
// below that length, and never emptied; one that is not the file the job
// had open (rotated away and replaced: other contents) is never cut at all.
// It is left as it is with a warning, or, with opts.Strict, the restore is
// refused; the same holds for a file the job only read. A file the job
// writes at an offset (not appending) is always refused: its writes would
// land in the middle of another file.
func rollbackFiles(p *image.Process, opts RestoreOptions, root string) error {
	for _, fd := range p.Files {
		if fd.Kind != image.FDFile || fd.File == nil {
			continue
		}
		path := root + fd.Path
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return fmt.Errorf("fd %d: %s: %w (the job had it open at checkpoint time)", fd.Num, fd.Path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue
		}
		same, err := fileid.SameWritten(path, &st, fd.File)
		if err != nil {
			return fmt.Errorf("fd %d: %w", fd.Num, err)
		}
		if !same {
			msg := fmt.Sprintf("fd %d: %s is not the file the job had open at checkpoint time (%d bytes then, other contents now: rotated or replaced)",
				fd.Num, fd.Path, fd.File.Size)
			switch {
			case writable(fd.Flags) && fd.Flags&unix.O_APPEND == 0:
				// Its writes at the old offset would overwrite the new
				// file's data.
				return &node.Error{Err: fmt.Errorf("%s; refused: the job writes at offset %d in it and would overwrite its data. Move it aside and put the job's file back at %s, or restart from the beginning",
					msg, fd.Pos, fd.Path)}
			case opts.Strict:
				return &node.Error{Err: errors.New(msg + "; refused (--strict)")}
			case writable(fd.Flags):
				opts.Log.Warnf("%s: left as it is; the job appends to it from here on", msg)
			default:
				opts.Log.Warnf("%s: left as it is; the job reads it at its old offset", msg)
			}
			continue
		}
		if !writable(fd.Flags) {
			continue
		}
		switch {
		case st.Size > fd.File.Size && opts.NoRollback:
			opts.Log.Infof("fd %d: %s is %d bytes longer than at checkpoint time; kept (--no-rollback)", fd.Num, fd.Path, st.Size-fd.File.Size)
		case st.Size > fd.File.Size:
			opts.Log.Infof("fd %d: rolling %s back from %d to %d bytes (its length at checkpoint time)", fd.Num, fd.Path, st.Size, fd.File.Size)
			if err := os.Truncate(path, fd.File.Size); err != nil {
				return fmt.Errorf("fd %d: roll back %s: %w", fd.Num, fd.Path, err)
			}
		case st.Size < fd.File.Size:
			opts.Log.Warnf("fd %d: %s is shorter (%d bytes) than at checkpoint time (%d); the job resumes at its old offset", fd.Num, fd.Path, st.Size, fd.File.Size)
		}
	}
	return nil
}
