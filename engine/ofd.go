package engine

import (
	"fmt"
	"syscall"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
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

// fdHolder is where a restored open file description can be fetched from:
// a descriptor of a process being restored.
type fdHolder struct {
	r  *restorer
	fd uint64
}
