package engine

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// fetchFD installs in r a descriptor for the open file description that h
// holds, returning its number. Within one process that is a dup; across
// processes the target takes it from the holder with pidfd_getfd, which
// shares the description (offset and status flags) just as fork does, or,
// without pidfd_getfd, the supervisor copies it out of the holder and
// into the target.
func (r *restorer) fetchFD(h fdHolder) (uint64, error) {
	if h.r == r {
		return r.Main.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, h.fd, unix.F_DUPFD_CLOEXEC, 0)
	}
	if !kernel.Has(kernel.PidfdGetfd) {
		local, err := h.r.PullFD(h.fd)
		if err != nil {
			return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.fd, h.r.proc.PID, err)
		}
		defer unix.Close(local)
		fds, err := r.PushFDs([]int{local})
		if err != nil {
			return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.fd, h.r.proc.PID, err)
		}
		return fds[0], nil
	}
	pidfd, err := r.Main.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(h.r.proc.PID), 0)
	if err != nil {
		return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.fd, h.r.proc.PID, err)
	}
	fd, err := r.Main.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, pidfd, h.fd, 0)
	if _, cerr := r.Main.Call("close", unix.SYS_CLOSE, pidfd); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.fd, h.r.proc.PID, err)
	}
	return fd, nil
}
