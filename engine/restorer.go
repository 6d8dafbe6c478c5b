package engine

import (
	"fmt"
	"sort"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/stub"
)

// restorer morphs one stub into one checkpointed process.
type restorer struct {
	inject.Process
	t      *ptrace.Tracer
	log    logrus.FieldLogger
	job    *jobRestore
	proc   *image.Process
	layout stub.Layout
	// pagesName is the process's page file in the generation.
	pagesName string
	// threads are the restored threads, in the order of proc.Threads.
	threads []*ptrace.Thread
	// progress counts the page data filled in; nil when no one follows it.
	progress *progress
}

// attach takes a freshly created stub under ptrace. The stub was started
// by the sandbox (spawned) or cloned by another stub (then it is traced
// from birth).
func (r *restorer) attach(hostPID int, spawned bool) error {
	if spawned {
		// EXITKILL: if the supervisor dies half-way, the half-built
		// process dies with it instead of running on. TRACEFORK: the
		// stub's children, cloned from it, are traced from birth.
		if err := r.t.Seize(hostPID, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK); err != nil {
			return err
		}
		if err := r.t.Interrupt(hostPID); err != nil {
			return err
		}
	} else {
		r.t.Adopt(hostPID)
	}
	if err := r.take(hostPID); err != nil {
		return err
	}
	if spawned {
		return r.unmapStubFile()
	}
	return nil
}

// take waits for the stub's stop and makes it the restorer's process.
func (r *restorer) take(hostPID int) error {
	if _, err := r.t.WaitStop(hostPID, 0); err != nil {
		return err
	}
	main, err := r.t.NewThread(hostPID, r.layout.Gadget)
	if err != nil {
		return err
	}
	r.Process = inject.Process{PID: hostPID, Main: main, Scratch: r.layout.Scratch, Size: r.layout.ScratchSize}
	return nil
}

// attachStopped takes a stub that was traced from birth and has just been
// exec'd (it is in its exec stop): the container runtime's.
func (r *restorer) attachStopped(hostPID int) error {
	r.t.Adopt(hostPID)
	if err := r.t.SetOptions(hostPID, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_TRACEFORK); err != nil {
		return err
	}
	// Injection cannot start from the exec stop (the exec has not
	// returned yet): the stub runs into its pause loop and is stopped
	// there, as a spawned stub is.
	if err := r.t.Cont(hostPID, 0); err != nil {
		return fmt.Errorf("resume stub %d: %w", hostPID, err)
	}
	if err := r.t.Interrupt(hostPID); err != nil {
		return err
	}
	if err := r.take(hostPID); err != nil {
		return err
	}
	return r.unmapStubFile()
}

// unmapStubFile replaces the stub's file-backed code and scratch pages with
// anonymous ones holding the same code, so the stub's executable is no
// longer mapped and prctl(PR_SET_MM_MAP) may point /proc/pid/exe at the
// job's executable. The replacing mmap pulls the code page from under the
// running step; the step still ends at gadget+2, where the new page has
// the same bytes once they are written.
func (r *restorer) unmapStubFile() error {
	l := r.layout
	size := l.Scratch + l.ScratchSize - l.Base
	if _, err := r.Main.Call("mmap stub", unix.SYS_MMAP, l.Base, size, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED, ^uint64(0), 0); err != nil {
		return err
	}
	if err := r.Write(l.Base, stub.Code()); err != nil {
		return err
	}
	if _, err := r.Main.Call("mprotect stub", unix.SYS_MPROTECT, l.Base, pageSize, unix.PROT_READ|unix.PROT_EXEC); err != nil {
		return err
	}
	_, err := r.Main.Call("mprotect scratch", unix.SYS_MPROTECT, l.Scratch, l.ScratchSize, unix.PROT_READ|unix.PROT_WRITE)
	return err
}

// restoreMemory rebuilds the address space and the process-wide state that
// lives with it.
func (r *restorer) restoreMemory() error {
	p := r.proc
	mem := &memory.Restorer{P: &r.Process, Img: p, Layout: r.layout, Log: r.log, Progress: r.progress, Shmem: r.shmemFD,
		Unverified: r.job != nil && r.job.opts.PagesUnverified}
	n, err := mem.Restore(r.job.opts.Gen, r.pagesName)
	if err != nil {
		return err
	}
	r.job.bytes += n
	if err := r.restoreMM(p); err != nil {
		return err
	}
	return r.restoreTask(p)
}

// stubBase finds room for the stub that no mapping of the image uses, low
// in the address space where the kernel puts nothing on its own.
func stubBase(vmas []image.VMA, size uint64) (uint64, error) {
	const lowest = 0x100000
	const highest = 0x7f0000000000
	sorted := append([]image.VMA(nil), vmas...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	cand := uint64(lowest)
	// One free page on each side keeps the stub from merging with, or
	// sitting in the guard gap of, a neighbouring mapping.
	need := size + 2*pageSize
	for _, v := range sorted {
		if v.Kind == image.VMAVsyscall {
			continue
		}
		if v.Start >= cand+need {
			break
		}
		if v.End > cand {
			cand = v.End
		}
	}
	if cand+need > highest {
		return 0, fmt.Errorf("no free address range of %d bytes for the restore stub", need)
	}
	return cand + pageSize, nil
}

// unmapStub removes the stub's code and scratch area. It is the last
// injected call: the step over it returns to an address that no longer
// exists, which is fine, because the registers are replaced before the
// thread runs again.
func (r *restorer) unmapStub() error {
	_, err := r.Main.Call("munmap stub", unix.SYS_MUNMAP, r.layout.Base, r.layout.End-r.layout.Base)
	return err
}

// release sets every thread's final registers and lets the process run; a
// process that was in a group stop is put back into it.
func (r *restorer) release() error {
	for i, th := range r.threads {
		if err := r.setFinalRegs(th, &r.proc.Threads[i]); err != nil {
			return err
		}
	}
	for _, th := range r.threads {
		sig := 0
		if th == r.Main && r.proc.State == image.ProcStopped {
			sig = int(unix.SIGSTOP)
		}
		if err := r.t.Detach(th.TID, sig); err != nil {
			return err
		}
	}
	return nil
}
