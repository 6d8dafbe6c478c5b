package namespaces

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// stubCaps are the capabilities a restorer needs inside the job user
// namespace: PIDs (ns_last_pid, clone3 set_tid), ptrace of the job, mm
// fields, ids, files it must reopen, signals and clocks. Init keeps the same
// set for itself: mounting /proc and creating a time namespace need
// CAP_SYS_ADMIN, its offsets CAP_SYS_TIME, ns_last_pid
// CAP_CHECKPOINT_RESTORE and securebits CAP_SETPCAP. CAP_IPC_OWNER lets a
// stub attach a System V segment whose mode no longer admits its owner.
var stubCaps = []uintptr{
	unix.CAP_CHECKPOINT_RESTORE,
	unix.CAP_SYS_ADMIN,
	unix.CAP_SYS_PTRACE,
	unix.CAP_SYS_RESOURCE,
	unix.CAP_SETPCAP,
	unix.CAP_SETUID,
	unix.CAP_SETGID,
	unix.CAP_DAC_OVERRIDE,
	unix.CAP_KILL,
	unix.CAP_SYS_TIME,
	unix.CAP_SYS_NICE,
	unix.CAP_IPC_OWNER,
}

// StubCaps returns the capabilities a stub started by SpawnStub holds in its
// ambient, permitted and effective sets: those of stubCaps this kernel
// knows. Kernels before 5.9 have no CAP_CHECKPOINT_RESTORE; CAP_SYS_ADMIN
// covers what it does there.
func StubCaps() []uintptr { return kernel.FilterCaps(stubCaps) }

// initCaps are the capabilities init is started with: the stubs' and
// CAP_NET_ADMIN, with which it brings up the loopback interface of a job
// network namespace. Neither the job nor a stub inherits it: both are
// started with ambient sets of their own.
func initCaps() []uintptr { return append(StubCaps(), unix.CAP_NET_ADMIN) }

// CapMask returns the capability bit mask of caps, as /proc/pid/status shows
// it in CapEff and friends.
func CapMask(caps []uintptr) uint64 {
	var m uint64
	for _, c := range caps {
		m |= 1 << c
	}
	return m
}

// dropThreadInheritance clears the calling thread's ambient and inheritable
// sets, so that children forked from this thread exec with no capabilities
// unless they are root: a job (or stub) run by uid 0 gains root's full set
// inside the job's user namespace on exec, as root does in any user
// namespace it owns (none on the host). Apptainer run by root needs them to
// build its own user namespace (--userns). Capability sets are per thread:
// the caller must hold its OS thread locked for as long as it relies on the
// result.
func dropThreadInheritance() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	return nil
}
