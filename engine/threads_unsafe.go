package engine

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// robustList reads the robust futex list head of thread tid and its
// length, which the kernel walks when the thread dies (pthread mutexes
// with PTHREAD_MUTEX_ROBUST).
func robustList(tid int) (head, length uint64, err error) {
	if _, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&length))); e != 0 {
		return 0, 0, fmt.Errorf("get_robust_list: %w", e)
	}
	return head, length, nil
}
