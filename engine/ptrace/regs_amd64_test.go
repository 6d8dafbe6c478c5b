package ptrace

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSyscallStopKindOf(t *testing.T) {
	tests := []struct {
		name string
		rax  int64
		want int
	}{
		{"entry", -int64(unix.ENOSYS), SyscallEntry},
		{"exit with a pid", 4242, SyscallExit},
		{"exit with zero", 0, SyscallExit},
		{"exit with an error", -int64(unix.EAGAIN), SyscallExit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Regs{Rax: uint64(tt.rax)}
			if got := syscallStopKindOf(&r); got != tt.want {
				t.Errorf("rax %d: kind %d, want %d", tt.rax, got, tt.want)
			}
		})
	}
}
