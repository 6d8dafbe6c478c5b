package engine

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
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

// kcmpFile is KCMP_FILE: compare two file descriptors' open file descriptions.
const kcmpFile = 0

// sameOpenFile reports whether fd a of pid1 and fd b of pid2 are one open
// file description (shared offset and flags), the way fork or dup share it.
func sameOpenFile(pid1, a, pid2, b int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(a), uintptr(b), 0)
	return e == 0 && r == 0
}

// dumpFiles records the file descriptors of a process. Kinds that cannot be
// restored yet fail the checkpoint with the pid, fd and kind named.
func dumpFiles(hostPID int, p *image.Process, stdio Stdio) error {
	fds, err := proc.ReadFDs(hostPID)
	if err != nil {
		return err
	}
	for _, fd := range fds {
		out := image.FD{Num: fd.Num, Flags: fd.Flags, Pos: fd.Pos}
		if stdio.PID != 0 {
			for s := 0; s <= 2; s++ {
				if sameOpenFile(stdio.PID, s, hostPID, fd.Num) {
					out.Kind, out.Stdio = image.FDStdio, s
					break
				}
			}
		}
		if out.Kind == "" {
			if err := classifyFD(hostPID, &fd, &out); err != nil {
				return fmt.Errorf("pid %d fd %d: %w", p.PID, fd.Num, err)
			}
		}
		p.Files = append(p.Files, out)
	}
	return nil
}

func classifyFD(hostPID int, fd *proc.FD, out *image.FD) error {
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
	case strings.HasPrefix(t, "pipe:"):
		return fmt.Errorf("pipe %s: pipes are not supported yet", t)
	case strings.HasPrefix(t, "socket:"):
		return fmt.Errorf("socket %s: sockets are not supported yet", t)
	case strings.HasPrefix(t, "anon_inode:"):
		return fmt.Errorf("%s: this kind of file descriptor is not supported yet", strings.TrimPrefix(t, "anon_inode:"))
	case strings.HasSuffix(t, " (deleted)"):
		return fmt.Errorf("file %s was deleted while open: not supported yet", strings.TrimSuffix(t, " (deleted)"))
	case strings.HasPrefix(t, "/memfd:"):
		return fmt.Errorf("memfd %s: not supported yet", t)
	case strings.HasPrefix(t, "/"):
		st, err := os.Stat(fmt.Sprintf("/proc/%d/fd/%d", hostPID, fd.Num))
		if err != nil {
			return fmt.Errorf("stat %s: %w", t, err)
		}
		if !st.Mode().IsRegular() && !st.IsDir() {
			return fmt.Errorf("%s (%s): this kind of file is not supported yet", t, st.Mode().Type())
		}
		id, err := fileID(t)
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
// below that length, and never emptied.
func rollbackFiles(p *image.Process, opts RestoreOptions) error {
	for _, fd := range p.Files {
		if fd.Kind != image.FDFile || fd.File == nil || !writable(fd.Flags) {
			continue
		}
		st, err := os.Stat(fd.Path)
		if err != nil {
			return fmt.Errorf("fd %d: %s: %w (the job had it open at checkpoint time)", fd.Num, fd.Path, err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		switch {
		case st.Size() > fd.File.Size && opts.NoRollback:
			opts.Log.Infof("fd %d: %s is %d bytes longer than at checkpoint time; kept (--no-rollback)", fd.Num, fd.Path, st.Size()-fd.File.Size)
		case st.Size() > fd.File.Size:
			opts.Log.Infof("fd %d: rolling %s back from %d to %d bytes (its length at checkpoint time)", fd.Num, fd.Path, st.Size(), fd.File.Size)
			if err := os.Truncate(fd.Path, fd.File.Size); err != nil {
				return fmt.Errorf("fd %d: roll back %s: %w", fd.Num, fd.Path, err)
			}
		case st.Size() < fd.File.Size:
			opts.Log.Warnf("fd %d: %s is shorter (%d bytes) than at checkpoint time (%d); the job resumes at its old offset", fd.Num, fd.Path, st.Size(), fd.File.Size)
		}
	}
	return nil
}

// restoreFiles re-creates the descriptor table. The stub starts with the
// restarting supervisor's stdin, stdout and stderr on 0-2; they are first
// moved above every fd the image uses, then each recorded fd is opened
// and moved to its number.
func (r *restorer) restoreFiles(p *image.Process) error {
	files := append([]image.FD(nil), p.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Num < files[j].Num })
	top := 3
	for _, f := range files {
		top = max(top, f.Num+1)
	}
	var stdio [3]uint64
	for s := 0; s < 3; s++ {
		fd, err := r.main.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, uint64(s), unix.F_DUPFD_CLOEXEC, uint64(top+s))
		if err != nil {
			return fmt.Errorf("stdio %d: %w", s, err)
		}
		stdio[s] = fd
		if _, err := r.main.Call("close", unix.SYS_CLOSE, uint64(s)); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := r.restoreFD(&f, stdio); err != nil {
			return fmt.Errorf("fd %d (%s): %w", f.Num, f.Kind, err)
		}
	}
	for _, f := range files {
		if f.Kind == image.FDEpoll {
			if err := r.restoreEpollEntries(&f); err != nil {
				return fmt.Errorf("fd %d (epoll): %w", f.Num, err)
			}
		}
	}
	for _, fd := range stdio {
		if _, err := r.main.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreFD(f *image.FD, stdio [3]uint64) error {
	cloexec := f.Flags&unix.O_CLOEXEC != 0
	var fd uint64
	var err error
	switch f.Kind {
	case image.FDStdio:
		return r.moveFD(stdio[f.Stdio], f.Num, cloexec, false)
	case image.FDFile, image.FDDevice:
		flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | unix.O_NOCTTY)
		fd, err = r.openat(f.Path, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := r.moveFD(fd, f.Num, cloexec, true); err != nil {
			return err
		}
		if f.Kind == image.FDFile && f.Pos != 0 {
			if _, err := r.main.Call("lseek", unix.SYS_LSEEK, uint64(f.Num), uint64(f.Pos), unix.SEEK_SET); err != nil {
				return err
			}
		}
		return nil
	case image.FDEventfd:
		flags := uint64(unix.EFD_CLOEXEC)
		if f.Flags&unix.O_NONBLOCK != 0 {
			flags |= unix.EFD_NONBLOCK
		}
		if f.EventfdSemaphore {
			flags |= unix.EFD_SEMAPHORE
		}
		if fd, err = r.main.Call("eventfd2", unix.SYS_EVENTFD2, f.EventfdCount, flags); err != nil {
			return err
		}
		return r.moveFD(fd, f.Num, cloexec, true)
	case image.FDEpoll:
		if fd, err = r.main.Call("epoll_create1", unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC); err != nil {
			return err
		}
		return r.moveFD(fd, f.Num, cloexec, true)
	}
	return fmt.Errorf("restoring %s descriptors is not supported", f.Kind)
}

// moveFD puts fd on number num with the recorded close-on-exec flag,
// closing the original when it was a temporary.
func (r *restorer) moveFD(fd uint64, num int, cloexec, closeOld bool) error {
	var flags uint64
	if cloexec {
		flags = unix.O_CLOEXEC
	}
	if fd == uint64(num) {
		// Opened right on its number (with O_CLOEXEC): only the flag
		// may need fixing.
		if !cloexec {
			_, err := r.main.Call("fcntl(F_SETFD)", unix.SYS_FCNTL, fd, unix.F_SETFD, 0)
			return err
		}
		return nil
	}
	if _, err := r.main.Call("dup3", unix.SYS_DUP3, fd, uint64(num), flags); err != nil {
		return err
	}
	if closeOld {
		if _, err := r.main.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return nil
}

// restoreEpollEntries registers the recorded fds on a restored epoll fd.
func (r *restorer) restoreEpollEntries(f *image.FD) error {
	addr, err := r.scratchAt(0, 12)
	if err != nil {
		return err
	}
	for _, e := range f.Epoll {
		// struct epoll_event is packed on x86-64: u32 events, u64 data.
		ev := make([]byte, 12)
		putU32(ev[0:], e.Events)
		putU64(ev[4:], e.Data)
		if err := r.write(addr, ev); err != nil {
			return err
		}
		if _, err := r.main.Call("epoll_ctl", unix.SYS_EPOLL_CTL, uint64(f.Num), unix.EPOLL_CTL_ADD, uint64(e.FD), addr); err != nil {
			return fmt.Errorf("register fd %d: %w", e.FD, err)
		}
	}
	return nil
}
