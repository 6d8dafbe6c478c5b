package engine

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPIDHolder(t *testing.T) {
	self, tid := os.Getpid(), threadNotMain(t)
	tests := []struct {
		name string
		id   int
		want string // substring; "" means no holder
	}{
		{"process", self, fmt.Sprintf("host task %d (", self)},
		{"thread", tid, fmt.Sprintf("a thread of host pid %d", self)},
		{"free id", 1 << 30, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pidHolder(self, tc.id)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("pidHolder(%d, %d) = %q, want it to contain %q", self, tc.id, got, tc.want)
			}
		})
	}
}

// threadNotMain returns the tid of a thread of this process other than the
// main one, held by a locked goroutine until the test ends.
func threadNotMain(t *testing.T) int {
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	if tid := unix.Gettid(); tid != os.Getpid() {
		return tid
	}
	// This goroutine holds the main thread, so another locked one cannot.
	tids, release := make(chan int), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tids <- unix.Gettid()
		<-release
	}()
	t.Cleanup(func() { close(release) })
	return <-tids
}
