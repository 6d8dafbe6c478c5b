package abi

import "encoding/binary"

// Sizes of the kernel's structures on x86-64.
const (
	SigsetSize     = 8  // the kernel's sigset_t: one bit per signal, 64 signals
	ItimerspecSize = 32 // struct itimerspec: interval, then value
	EpollEventSize = 12 // struct epoll_event, packed on x86-64
)

// PutU32 and PutU64 store in the byte order of the job's memory.
func PutU32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
func PutU64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }

// Itimerspec encodes struct itimerspec.
func Itimerspec(intervalSec, intervalNsec, sec, nsec int64) []byte {
	its := make([]byte, ItimerspecSize)
	PutU64(its[0:], uint64(intervalSec))
	PutU64(its[8:], uint64(intervalNsec))
	PutU64(its[16:], uint64(sec))
	PutU64(its[24:], uint64(nsec))
	return its
}

// EpollEvent encodes struct epoll_event: u32 events, then u64 data with
// no padding between them.
func EpollEvent(events uint32, data uint64) []byte {
	ev := make([]byte, EpollEventSize)
	PutU32(ev[0:], events)
	PutU64(ev[4:], data)
	return ev
}

// TaskSize is the top of the user address space (TASK_SIZE with 4-level
// page tables).
const TaskSize = 0x7ffffffff000

// System V shared memory: shmat flags and where struct shmid64_ds keeps
// the segment's size.
const (
	ShmRdonly   = 0o10000  // SHM_RDONLY
	ShmRemap    = 0o40000  // SHM_REMAP
	ShmExec     = 0o100000 // SHM_EXEC
	ShmidDsSize = 112      // struct shmid64_ds
	OffShmSegsz = 48       // shm_segsz in struct shmid64_ds
)

// Order is the byte order of the job's memory and of the structures the
// kernel fills in.
var Order = binary.LittleEndian
