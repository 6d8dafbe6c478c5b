package engine

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// fileKey is the inode an fd refers to; fds of one open file description
// always share it, so kcmp only runs between fds with the same key.
type fileKey struct{ dev, ino uint64 }

// ofdTable numbers the job's open file descriptions while its processes are
// dumped one after another.
type ofdTable struct {
	next  int
	byKey map[fileKey][]ofdEntry
}

type ofdEntry struct {
	hostPID, fd, id int
}

func newOFDTable() *ofdTable { return &ofdTable{byKey: map[fileKey][]ofdEntry{}} }

// id returns the job-wide id of the open file description behind fd of
// hostPID, and whether this fd is the first one seen with it.
func (t *ofdTable) id(hostPID, fd int) (id int, first bool, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/fd/%d", hostPID, fd), &st); err != nil {
		return 0, false, fmt.Errorf("stat: %w", err)
	}
	key := fileKey{dev: st.Dev, ino: st.Ino}
	for _, e := range t.byKey[key] {
		if sameOpenFile(e.hostPID, e.fd, hostPID, fd) {
			return e.id, false, nil
		}
	}
	t.next++
	t.byKey[key] = append(t.byKey[key], ofdEntry{hostPID: hostPID, fd: fd, id: t.next})
	return t.next, true, nil
}

// fdHolder is where a restored open file description can be fetched from:
// a descriptor of a process being restored.
type fdHolder struct {
	r  *restorer
	fd uint64
}

// fetchFD installs in r a descriptor for the open file description that h
// holds, returning its number. Within one process that is a dup; across
// processes the target takes it from the holder with pidfd_getfd, which
// shares the description (offset and status flags) just as fork does.
func (r *restorer) fetchFD(h fdHolder) (uint64, error) {
	if h.r == r {
		return r.main.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, h.fd, unix.F_DUPFD_CLOEXEC, 0)
	}
	pidfd, err := r.main.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(h.r.proc.PID), 0)
	if err != nil {
		return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.fd, h.r.proc.PID, err)
	}
	fd, err := r.main.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, pidfd, h.fd, 0)
	if _, cerr := r.main.Call("close", unix.SYS_CLOSE, pidfd); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.fd, h.r.proc.PID, err)
	}
	return fd, nil
}

// pullFD copies descriptor fd of a process being restored into the
// supervisor, to fill it with data. The caller closes the result.
func pullFD(hostPID int, fd uint64) (int, error) {
	pidfd, err := unix.PidfdOpen(hostPID, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", hostPID, err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, int(fd), 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd %d of %d: %w", fd, hostPID, err)
	}
	return local, nil
}
