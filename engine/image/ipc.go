package image

import "strconv"

// VMASysVShm is an attachment of a System V shared memory segment (shmat).
// Its pages are not in the process's page file: the segment's contents are
// saved once, in SysVIPC, and the restore attaches the re-created segment.
const VMASysVShm VMAKind = "sysv-shm"

// SysVShmName is the data file holding the contents of the segment with id.
func SysVShmName(id int) string { return "sysv-shm-" + strconv.Itoa(id) + ".img" }

// SysVShmAttach says which segment a VMASysVShm mapping shows and how.
type SysVShmAttach struct {
	// ID is the segment's shmid, the inode number /proc/pid/maps shows.
	ID int `json:"id"`
	// ReadOnly is an attach with SHM_RDONLY: the mapping may never become
	// writable, whatever its current protection.
	ReadOnly bool `json:"read_only,omitempty"`
}

// SysVIPC is the System V IPC state of the job's IPC namespace. Ids,
// uids and gids are as seen inside the job's user namespace.
type SysVIPC struct {
	Shm []SysVShm `json:"shm,omitempty"`
	Sem []SysVSem `json:"sem,omitempty"`
	Msg []SysVMsq `json:"msg,omitempty"`
	// Limits are the namespace's IPC sysctls (shmmax, msgmnb, sem...) by
	// name under /proc/sys/kernel; a restore sets those the new namespace
	// has at other values.
	Limits map[string]string `json:"limits,omitempty"`
}

// SysVPerm is what every System V object has: its key, id and ipc_perm.
type SysVPerm struct {
	Key  int32 `json:"key"`
	ID   int   `json:"id"`
	UID  int   `json:"uid"`
	GID  int   `json:"gid"`
	CUID int   `json:"cuid"`
	CGID int   `json:"cgid"`
	// Mode holds the permission bits (0777) only.
	Mode uint32 `json:"mode"`
}

// SysVShm is one shared memory segment.
type SysVShm struct {
	SysVPerm
	Size uint64 `json:"size"`
	// Destroyed is a segment marked with IPC_RMID (SHM_DEST) that lives on
	// while attached; the restore marks it again once the job's processes
	// have attached it.
	Destroyed bool `json:"destroyed,omitempty"`
	// Locked is a segment locked in memory with SHM_LOCK.
	Locked bool `json:"locked,omitempty"`
	// Data names the file with the segment's Size bytes.
	Data string `json:"data"`
}

// SysVSem is one semaphore set.
type SysVSem struct {
	SysVPerm
	Values []uint16 `json:"values"`
}

// SysVMsq is one message queue with its messages, oldest first.
type SysVMsq struct {
	SysVPerm
	// QBytes is the queue's byte limit (msg_qbytes).
	QBytes   uint64    `json:"qbytes"`
	Messages []SysVMsg `json:"messages,omitempty"`
}

// SysVMsg is one queued message.
type SysVMsg struct {
	Type int64  `json:"type"`
	Data []byte `json:"data"`
}

// Count is the number of objects of every kind.
func (s *SysVIPC) Count() int {
	if s == nil {
		return 0
	}
	return len(s.Shm) + len(s.Sem) + len(s.Msg)
}
