package namespaces

import (
	"strconv"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/tinyelf"
)

// Exit statuses of the pre-init program, read by Start when init dies before
// it reports ready.
const (
	preInitLastPIDFailed = 125
	preInitExecFailed    = 126
)

// preInitELF returns a static program that writes lastPID to
// /proc/sys/kernel/ns_last_pid (which acts on the writer's own PID
// namespace) and then executes argv[0] with its own argv and environment.
// It runs as PID 1 of a fresh PID namespace before the Go runtime of init
// starts any thread, so that those threads get PIDs after lastPID.
func preInitELF(lastPID int) []byte {
	num := []byte(strconv.Itoa(lastPID))
	var a tinyelf.Asm
	a.LeaRIP(tinyelf.RDI, "path")
	a.MovImm(tinyelf.RSI, 0x80001) // O_WRONLY|O_CLOEXEC
	a.Syscall(2)                   // open
	a.TestEAX()
	a.Js("fail")
	a.Emit(0x89, 0xc7) // mov edi, eax
	a.LeaRIP(tinyelf.RSI, "num")
	a.MovImm(tinyelf.RDX, uint32(len(num)))
	a.Syscall(1) // write
	a.TestEAX()
	a.Js("fail")
	a.Emit(0x48, 0x8b, 0x7c, 0x24, 0x08) // mov rdi, [rsp+8]         argv[0]
	a.Emit(0x48, 0x8d, 0x74, 0x24, 0x08) // lea rsi, [rsp+8]         argv
	emitEnvp(&a)
	a.Syscall(59) // execve
	a.Exit(preInitExecFailed)
	a.Label("fail")
	a.Exit(preInitLastPIDFailed)
	a.Data("path", []byte("/proc/sys/kernel/ns_last_pid\x00"))
	a.Data("num", num)
	return tinyelf.Build(a.MustAssemble())
}

// emitEnvp loads the program's environment pointer into RDX: it follows
// argc, the argv pointers and their NULL on the initial stack.
func emitEnvp(a *tinyelf.Asm) {
	a.Emit(0x48, 0x8b, 0x14, 0x24)       // mov rdx, [rsp]           argc
	a.Emit(0x48, 0x8d, 0x54, 0xd4, 0x10) // lea rdx, [rsp+rdx*8+16]  envp
}
