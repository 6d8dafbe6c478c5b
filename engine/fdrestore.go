package engine

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// restoreFiles re-creates the descriptor table. The stub starts with the
// restarting supervisor's stdin, stdout and stderr on 0-2; they are first
// moved above every fd the image uses, then each recorded fd is opened
// and moved to its number.
func (r *restorer) restoreFiles(p *image.Process) error {
	files := append([]image.FD(nil), p.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Num < files[j].Num })
	top := r.fdTop()
	var stdio [3]uint64
	for s := 0; s < 3; s++ {
		fd, err := r.Main.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, uint64(s), unix.F_DUPFD_CLOEXEC, uint64(top+s))
		if err != nil {
			return fmt.Errorf("stdio %d: %w", s, err)
		}
		stdio[s] = fd
		if _, err := r.Main.Call("close", unix.SYS_CLOSE, uint64(s)); err != nil {
			return err
		}
	}
	created := map[int]bool{}
	for _, f := range files {
		h, shared := r.job.holders[f.OFD]
		if f.Kind == image.FDStdio || f.OFD == 0 || !shared {
			if err := r.restoreFD(&f, stdio); err != nil {
				return fmt.Errorf("fd %d (%s): %w", f.Num, f.Kind, err)
			}
			created[f.Num] = true
			if f.OFD != 0 && f.Kind != image.FDStdio {
				r.job.holders[f.OFD] = fdHolder{r: r, fd: uint64(f.Num)}
			}
			continue
		}
		fd, err := r.fetchFD(h)
		if err != nil {
			return fmt.Errorf("fd %d (%s): %w", f.Num, f.Kind, err)
		}
		if err := r.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true); err != nil {
			return fmt.Errorf("fd %d (%s): %w", f.Num, f.Kind, err)
		}
	}
	for _, f := range files {
		if f.Kind == image.FDEpoll && created[f.Num] {
			if err := r.restoreEpollEntries(&f); err != nil {
				return fmt.Errorf("fd %d (epoll): %w", f.Num, err)
			}
		}
	}
	for _, fd := range stdio {
		if _, err := r.Main.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return nil
}

// fdTop is the first descriptor number above every one the image uses.
// restoreFiles parks the standard streams on the three numbers from there,
// moveHigh the restore's own descriptors above those.
func (r *restorer) fdTop() int {
	top := 3
	for _, f := range r.proc.Files {
		top = max(top, f.Num+1)
	}
	return top
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
		fd, err = r.Openat(f.Path, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := r.moveFD(fd, f.Num, cloexec, true); err != nil {
			return err
		}
		if f.Kind == image.FDFile && f.Pos != 0 {
			if _, err := r.Main.Call("lseek", unix.SYS_LSEEK, uint64(f.Num), uint64(f.Pos), unix.SEEK_SET); err != nil {
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
		if fd, err = r.Main.Call("eventfd2", unix.SYS_EVENTFD2, f.EventfdCount, flags); err != nil {
			return err
		}
		return r.moveFD(fd, f.Num, cloexec, true)
	case image.FDEpoll:
		if fd, err = r.Main.Call("epoll_create1", unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC); err != nil {
			return err
		}
		return r.moveFD(fd, f.Num, cloexec, true)
	case image.FDTimerfd, image.FDSignalfd, image.FDInotify:
		if fd, err = r.createAnonFD(f); err != nil {
			return err
		}
		return r.moveFD(fd, f.Num, cloexec, true)
	case image.FDMemfd, image.FDDeleted:
		if fd, err = r.createFromContents(f, r.job.opts.Gen); err != nil {
			return err
		}
		return r.moveFD(fd, f.Num, cloexec, true)
	case image.FDPipe:
		return r.restorePipe(f)
	case image.FDUnix:
		return r.restoreUnix(f)
	case image.FDFifo:
		return r.restoreFifo(f)
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
			_, err := r.Main.Call("fcntl(F_SETFD)", unix.SYS_FCNTL, fd, unix.F_SETFD, 0)
			return err
		}
		return nil
	}
	if _, err := r.Main.Call("dup3", unix.SYS_DUP3, fd, uint64(num), flags); err != nil {
		return err
	}
	if closeOld {
		if _, err := r.Main.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return nil
}

// restoreEpollEntries registers the recorded fds on a restored epoll fd.
func (r *restorer) restoreEpollEntries(f *image.FD) error {
	addr, err := r.ScratchAt(0, abi.EpollEventSize)
	if err != nil {
		return err
	}
	for _, e := range f.Epoll {
		if err := r.Write(addr, abi.EpollEvent(e.Events, e.Data)); err != nil {
			return err
		}
		if _, err := r.Main.Call("epoll_ctl", unix.SYS_EPOLL_CTL, uint64(f.Num), unix.EPOLL_CTL_ADD, uint64(e.FD), addr); err != nil {
			return fmt.Errorf("register fd %d: %w", e.FD, err)
		}
	}
	return nil
}
