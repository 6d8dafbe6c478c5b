package kernel

import (
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/tinyelf"
)

// Exit statuses of the time namespace vfork probe.
const (
	probeVforkRefused = 1
	probeNoNamespace  = 2
)

// pauseProgram loops on pause(2): a process for the ptrace probes to stop.
func pauseProgram() []byte {
	var a tinyelf.Asm
	a.Label("loop")
	a.Syscall(unix.SYS_PAUSE)
	a.Jmp("loop")
	return tinyelf.Build(a.MustAssemble())
}

// exitProgram exits 0 at once.
func exitProgram() []byte {
	var a tinyelf.Asm
	a.Exit(0)
	return tinyelf.Build(a.MustAssemble())
}

// timensVforkProgram makes a user namespace and a time namespace for its
// children, then vforks; the child exits at once. It exits 0 when the vfork
// worked, probeVforkRefused when the kernel refused it and
// probeNoNamespace when it could not make the namespaces.
func timensVforkProgram() []byte {
	var a tinyelf.Asm
	a.MovImm(tinyelf.RDI, unix.CLONE_NEWUSER|unix.CLONE_NEWTIME)
	a.Syscall(unix.SYS_UNSHARE)
	a.TestEAX()
	a.Js("no_namespace")
	a.Syscall(unix.SYS_VFORK)
	a.TestEAX()
	a.Js("refused")
	a.Jz("child")
	a.Exit(0)
	a.Label("child")
	a.MovImm(tinyelf.RDI, 0)
	a.Syscall(unix.SYS_EXIT) // the child alone: the parent still needs its stack
	a.Label("refused")
	a.Exit(probeVforkRefused)
	a.Label("no_namespace")
	a.Exit(probeNoNamespace)
	return tinyelf.Build(a.MustAssemble())
}
