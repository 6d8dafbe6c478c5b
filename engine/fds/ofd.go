package fds

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
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
		if inject.SameOpenFile(e.hostPID, e.fd, hostPID, fd) {
			return e.id, false, nil
		}
	}
	t.next++
	t.byKey[key] = append(t.byKey[key], ofdEntry{hostPID: hostPID, fd: fd, id: t.next})
	return t.next, true, nil
}

// Holder is where a restored open file description can be taken from: a
// descriptor of a process being restored.
type Holder struct {
	P *inject.Process
	// PID is the process's recorded pid, which is its pid in the
	// namespace of the processes restored with it.
	PID int
	FD  uint64
}

// Fetch installs in process into a descriptor for the open file
// description that h holds, returning its number. Within one process that
// is a dup; across processes the target takes it from the holder with
// pidfd_getfd, which shares the description (offset and status flags) just
// as fork does, or, without pidfd_getfd, the supervisor copies it out of
// the holder and into the target.
func (jr *Restorer) Fetch(into *inject.Process, h Holder) (uint64, error) {
	if h.P == into {
		return into.Main.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, h.FD, unix.F_DUPFD_CLOEXEC, 0)
	}
	if !kernel.Has(kernel.PidfdGetfd) {
		local, err := h.P.PullFD(h.FD)
		if err != nil {
			return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.FD, h.PID, err)
		}
		defer unix.Close(local)
		fds, err := into.PushFDs([]int{local})
		if err != nil {
			return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.FD, h.PID, err)
		}
		return fds[0], nil
	}
	pidfd, err := into.Main.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(h.PID), 0)
	if err != nil {
		return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.FD, h.PID, err)
	}
	fd, err := into.Main.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, pidfd, h.FD, 0)
	if _, cerr := into.Main.Call("close", unix.SYS_CLOSE, pidfd); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("fetch fd %d of pid %d: %w", h.FD, h.PID, err)
	}
	return fd, nil
}

// Abandon releases what the supervisor holds for a restore that failed;
// the job's processes, and their descriptors, are killed by the caller.
func (jr *Restorer) Abandon() { jr.inet.Abandon() }

// Release finishes what needs every process's descriptors and closes the
// descriptors kept for the restore.
func (jr *Restorer) Release() error {
	// Every socket exists now: connections between them can go on.
	if err := jr.inet.Finish(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, h := range jr.kept {
		if _, err := h.P.Main.Call("close", unix.SYS_CLOSE, h.FD); err != nil {
			return fmt.Errorf("restore pid %d: %w", h.PID, err)
		}
	}
	jr.kept = nil
	return nil
}

// Shmem returns the holder of shared memory object id, when it is
// restored already.
func (jr *Restorer) Shmem(id string) (Holder, bool) {
	h, ok := jr.shmem[id]
	return h, ok
}

// SetShmem records the holder of shared memory object id.
func (jr *Restorer) SetShmem(id string, h Holder) { jr.shmem[id] = h }
