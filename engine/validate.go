package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fds"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inetsock"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/xstate"
)

// Bounds on what one image may ask of a restore. They are far above what a
// real job has, and low enough that a corrupt or hand-made image fails here
// instead of after minutes of work.
const (
	maxThreadsPerProcess = 1 << 16
	maxTasks             = 1 << 18 // processes and threads of the job
	maxVMAsPerProcess    = 1 << 20 // vm.max_map_count is 65530 by default
	maxFD                = 1 << 20 // NR_OPEN
	maxPendingSignals    = 1 << 16
	maxEpollEntries      = 1 << 20
	sigInfoSize          = 128
	lastSignal           = 64
	lastItimer           = 2 // ITIMER_PROF
)

// ImageError is a generation whose contents cannot be restored: a value out
// of range, a reference that leads nowhere. Nothing was started.
type ImageError struct {
	Generation int
	PID        int
	What       string
}

func (e *ImageError) Error() string {
	if e.PID != 0 {
		return fmt.Sprintf("generation %d: pid %d: %s: the image cannot be restored", e.Generation, e.PID, e.What)
	}
	return fmt.Sprintf("generation %d: %s: the image cannot be restored", e.Generation, e.What)
}

// Validate reads every core file of the verified generation gen and checks
// every value a restore would act on, so that a corrupt or hand-made image
// is refused before anything is started.
func Validate(gen *image.Generation) error {
	m := gen.Manifest
	if len(m.Processes) == 0 {
		return &ImageError{Generation: gen.Gen, What: "the image holds no process"}
	}
	procs := make([]*image.Process, 0, len(m.Processes))
	for _, ref := range m.Processes {
		p, err := loadProcess(gen, ref)
		if err != nil {
			return &ImageError{Generation: gen.Gen, PID: ref.PID, What: err.Error()}
		}
		procs = append(procs, p)
	}
	return validateImage(gen, procs)
}

// validateImage checks the processes of gen (in manifest order).
func validateImage(gen *image.Generation, procs []*image.Process) error {
	v := &validator{gen: gen.Gen, pidMax: pidMax(), tids: map[int]int{}, stateOFDs: map[int]bool{}, minAddr: memory.MinAddr()}
	if cpu := gen.Manifest.CPU; cpu != nil {
		v.xstate = cpu.XState
	}
	if len(procs) > maxTasks {
		return v.fail(0, "%d processes, at most %d", len(procs), maxTasks)
	}
	for i, p := range procs {
		ref := gen.Manifest.Processes[i]
		if p.PID != ref.PID {
			return v.fail(ref.PID, "its core file is that of pid %d", p.PID)
		}
		if err := v.process(gen, p); err != nil {
			return err
		}
	}
	if m := gen.Manifest; m.IPC != nil {
		for i, s := range m.IPC.Shm {
			if s.Size > 1<<46 {
				return v.fail(0, "ipc.shm[%d]: size %d", i, s.Size)
			}
		}
	}
	return nil
}

// validator carries what the checks of one image share.
type validator struct {
	gen    int
	pidMax int
	// tids maps every pid and tid seen to the process it belongs to.
	tids map[int]int
	// xstate is the layout of the threads' XSAVE areas.
	xstate xstate.Layout
	// stateOFDs are the open file descriptions whose state an earlier
	// descriptor carried.
	stateOFDs map[int]bool
	// minAddr is the lowest address a process may map here.
	minAddr uint64
}

func (v *validator) fail(pid int, format string, args ...any) error {
	return &ImageError{Generation: v.gen, PID: pid, What: fmt.Sprintf(format, args...)}
}

// id checks a pid, tid, process group or session in the job's namespace.
func (v *validator) id(what string, id int, zeroOK bool) error {
	if id == 0 && zeroOK {
		return nil
	}
	if id < 1 || id > v.pidMax {
		return fmt.Errorf("%s %d is not a pid of this node (1 to %d)", what, id, v.pidMax)
	}
	return nil
}

// process checks one process.
func (v *validator) process(gen *image.Generation, p *image.Process) error {
	pid := p.PID
	if err := v.id("pid", pid, false); err != nil {
		return v.fail(pid, "%v", err)
	}
	if pid == initPID {
		return v.fail(pid, "pid 1 is the sandbox's init, never a job process")
	}
	for _, f := range []struct {
		what string
		id   int
	}{{"parent", p.PPID}, {"process group", p.PGID}, {"session", p.SID}} {
		if err := v.id(f.what, f.id, true); err != nil {
			return v.fail(pid, "%v", err)
		}
	}
	if owner, dup := v.tids[pid]; dup {
		return v.fail(pid, "its pid is also a thread of pid %d", owner)
	}
	v.tids[pid] = pid
	switch p.State {
	case image.ProcRunning, image.ProcStopped:
	case image.ProcZombie:
		return nil // only its ids and exit status are used
	default:
		return v.fail(pid, "unknown state %q", p.State)
	}
	if len(p.Threads) == 0 || len(p.Threads) > maxThreadsPerProcess {
		return v.fail(pid, "%d threads, want 1 to %d", len(p.Threads), maxThreadsPerProcess)
	}
	if len(v.tids)+len(p.Threads) > maxTasks {
		return v.fail(pid, "more than %d processes and threads in the job", maxTasks)
	}
	for i := range p.Threads {
		if err := v.thread(p, i); err != nil {
			return v.fail(pid, "threads[%d]: %v", i, err)
		}
	}
	for _, f := range []struct{ what, path string }{{"executable", p.Exe.Path}, {"cwd", p.Cwd}, {"root", p.Root}} {
		if err := checkPath(f.path); err != nil {
			return v.fail(pid, "%s: %v", f.what, err)
		}
	}
	if err := checkVMAs(p, v.minAddr); err != nil {
		return v.fail(pid, "%v", err)
	}
	if err := checkPageRuns(gen, p); err != nil {
		return v.fail(pid, "%v", err)
	}
	if err := checkMM(&p.MM); err != nil {
		return v.fail(pid, "mm: %v", err)
	}
	if err := v.checkFiles(gen, p); err != nil {
		return v.fail(pid, "%v", err)
	}
	return checkSignalsAndTimers(p, v)
}

// thread checks one thread of p.
func (v *validator) thread(p *image.Process, i int) error {
	th := &p.Threads[i]
	if i == 0 && th.TID != p.PID {
		return fmt.Errorf("the first thread is %d, not the process's main thread", th.TID)
	}
	if err := v.id("tid", th.TID, false); err != nil {
		return err
	}
	if i > 0 {
		if owner, dup := v.tids[th.TID]; dup {
			return fmt.Errorf("tid %d is also an id of pid %d", th.TID, owner)
		}
		v.tids[th.TID] = p.PID
	}
	if len(th.XState) > ptrace.MaxXStateSize {
		return fmt.Errorf("XSAVE area of %d bytes, at most %d", len(th.XState), ptrace.MaxXStateSize)
	}
	if len(th.XState) > 0 {
		if _, err := xstate.InUse(th.XState); err != nil {
			return err
		}
		if err := v.xstate.Check(len(th.XState)); err != nil {
			return fmt.Errorf("the image's CPU: %w", err)
		}
	}
	if len(th.Pending) > maxPendingSignals {
		return fmt.Errorf("%d pending signals", len(th.Pending))
	}
	for k, s := range th.Pending {
		if len(s.Raw) != sigInfoSize {
			return fmt.Errorf("pending[%d]: siginfo of %d bytes, want %d", k, len(s.Raw), sigInfoSize)
		}
	}
	if r := th.Rseq; r != nil && (r.Ptr == 0 || r.Ptr >= abi.TaskSize || r.Size < 20 || r.Size > pageSize) {
		return fmt.Errorf("rseq area %#x of %d bytes", r.Ptr, r.Size)
	}
	if pc := th.Regs.PC(); pc >= abi.TaskSize {
		return fmt.Errorf("rip %#x is outside the user address space", pc)
	}
	return nil
}

// checkVMAs checks that the mappings are page-aligned, in the user address
// space at minAddr (vm.mmap_min_addr) or above, in order and apart.
func checkVMAs(p *image.Process, minAddr uint64) error {
	if len(p.VMAs) > maxVMAsPerProcess {
		return fmt.Errorf("%d mappings, at most %d", len(p.VMAs), maxVMAsPerProcess)
	}
	var prev uint64
	for i, m := range p.VMAs {
		switch m.Kind {
		case image.VMAVsyscall:
			continue // fixed by the kernel, never re-created
		case image.VMAAnon, image.VMAAnonShared, image.VMAFileGone, image.VMAFilePrivate, image.VMAFileShared,
			image.VMAVDSO, image.VMAVVar, image.VMAVVarVClock, image.VMASysVShm:
		default:
			return fmt.Errorf("vmas[%d]: unknown kind %q", i, m.Kind)
		}
		switch {
		case m.Start%pageSize != 0 || m.End%pageSize != 0:
			return fmt.Errorf("vmas[%d]: %#x-%#x is not page-aligned", i, m.Start, m.End)
		case m.Start >= m.End:
			return fmt.Errorf("vmas[%d]: %#x-%#x is empty or reversed", i, m.Start, m.End)
		case m.End > abi.TaskSize:
			return fmt.Errorf("vmas[%d]: %#x-%#x reaches beyond the user address space", i, m.Start, m.End)
		case m.Start < prev:
			return fmt.Errorf("vmas[%d]: %#x-%#x overlaps the mapping before it or is out of order", i, m.Start, m.End)
		case m.Prot&^7 != 0:
			return fmt.Errorf("vmas[%d]: protection %#x", i, m.Prot)
		case m.Start < minAddr:
			return fmt.Errorf("vmas[%d]: %#x-%#x lies below the lowest address a process may map (%#x)", i, m.Start, m.End, minAddr)
		case (m.Kind == image.VMAFilePrivate || m.Kind == image.VMAFileShared) && m.File == nil:
			return fmt.Errorf("vmas[%d]: a file mapping without its file", i)
		case m.Offset%pageSize != 0 || m.Offset > 1<<62:
			return fmt.Errorf("vmas[%d]: file offset %#x", i, m.Offset)
		}
		if m.File != nil {
			if err := checkPath(m.File.Path); err != nil {
				return fmt.Errorf("vmas[%d]: %v", i, err)
			}
		}
		prev = m.End
	}
	return nil
}

// checkPath refuses a path a restore would open that is not absolute and
// clean: the kernel never reports "..", "." or doubled slashes, so one
// comes from an image changed by hand.
func checkPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("path %q is not absolute", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("path %q is not clean (. or .. components, doubled or trailing slashes)", p)
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("path %q holds a NUL byte", p)
	}
	return nil
}

// checkPageRuns checks that the stored pages lie in the user address space
// and in the page files: the generation's own, and those of earlier
// generations that its manifest lists for this process.
func checkPageRuns(gen *image.Generation, p *image.Process) error {
	own := int64(-1) // the data size of the generation's own page file
	if sum, ok := gen.Sum(image.PagesName(p.PID)); ok {
		if err := checkPageEncoding(sum); err != nil {
			return err
		}
		own = sum.DataLen()
	}
	for i, r := range p.PageRuns {
		end := r.Addr + r.Pages*pageSize
		switch {
		case r.Pages == 0 || r.Pages > abi.TaskSize/pageSize:
			return fmt.Errorf("page_runs[%d]: %d pages", i, r.Pages)
		case r.Addr%pageSize != 0 || end <= r.Addr || end > abi.TaskSize:
			return fmt.Errorf("page_runs[%d]: %d pages at %#x reach beyond the user address space", i, r.Pages, r.Addr)
		}
		size, what := own, "its own page file"
		if r.Generation != 0 && r.Generation != gen.Gen {
			ref, ok := gen.Ref(r.Generation, image.PagesName(p.PID))
			if !ok {
				return fmt.Errorf("page_runs[%d]: pages of generation %d, whose %s the manifest does not list", i, r.Generation, image.PagesName(p.PID))
			}
			if err := checkPageEncoding(ref.FileSum); err != nil {
				return fmt.Errorf("generation %d's %w", r.Generation, err)
			}
			size, what = ref.DataLen(), fmt.Sprintf("generation %d's page file", r.Generation)
		}
		if r.Offset%pageSize != 0 || r.Offset+r.Pages*pageSize < r.Offset || int64(r.Offset+r.Pages*pageSize) > size {
			return fmt.Errorf("page_runs[%d]: %d pages at offset %#x are not in %s of %d bytes", i, r.Pages, r.Offset, what, max(size, 0))
		}
	}
	return nil
}

// checkPageEncoding checks that a page file is stored as it is or in an
// encoding this version reads.
func checkPageEncoding(f image.FileSum) error {
	switch f.Codec {
	case "":
		if f.DataSize != 0 {
			return fmt.Errorf("%s: data_size %d without a codec", f.Name, f.DataSize)
		}
	case image.CodecZstd:
		if f.DataSize < 0 || f.DataSize%pageSize != 0 {
			return fmt.Errorf("%s: data_size %d", f.Name, f.DataSize)
		}
	default:
		return fmt.Errorf("%s is encoded with %q, which this ckpt-apptainer cannot read: restart it with a newer ckpt-apptainer", f.Name, f.Codec)
	}
	return nil
}

// checkMM checks the mm fields prctl(PR_SET_MM_MAP) gets.
func checkMM(mm *image.MM) error {
	for _, f := range []struct {
		name string
		v    uint64
	}{{"start_code", mm.StartCode}, {"end_code", mm.EndCode}, {"start_data", mm.StartData}, {"end_data", mm.EndData},
		{"start_brk", mm.StartBrk}, {"brk", mm.Brk}, {"start_stack", mm.StartStack}, {"arg_start", mm.ArgStart},
		{"arg_end", mm.ArgEnd}, {"env_start", mm.EnvStart}, {"env_end", mm.EnvEnd}} {
		if f.v >= abi.TaskSize {
			return fmt.Errorf("%s %#x is outside the user address space", f.name, f.v)
		}
	}
	if len(mm.Auxv) > 1024 || len(mm.Auxv)%2 != 0 {
		return fmt.Errorf("auxv of %d words", len(mm.Auxv))
	}
	return nil
}

// checkFiles checks the descriptors: numbers in range and each once, kinds
// known, data files listed in the manifest.
func (v *validator) checkFiles(gen *image.Generation, p *image.Process) error {
	seen := map[int]bool{}
	for i, f := range p.Files {
		if f.Num < 0 || f.Num >= maxFD {
			return fmt.Errorf("files[%d]: fd %d is beyond the kernel's limit of %d", i, f.Num, maxFD)
		}
		if seen[f.Num] {
			return fmt.Errorf("files[%d]: fd %d appears twice", i, f.Num)
		}
		seen[f.Num] = true
		switch f.Kind {
		case image.FDFile, image.FDFifo:
			if err := checkPath(f.Path); err != nil {
				return fmt.Errorf("fd %d: %v", f.Num, err)
			}
			if f.File != nil && f.File.Path != f.Path {
				return fmt.Errorf("fd %d: path %q, but its file record names %q", f.Num, f.Path, f.File.Path)
			}
		case image.FDDevice:
			if !fds.ReopenedDevice(f.Path) {
				return fmt.Errorf("fd %d: device %q is not one a restore reopens", f.Num, f.Path)
			}
		case image.FDStdio:
			if f.Stdio < 0 || f.Stdio > 2 {
				return fmt.Errorf("fd %d: stdio %d", f.Num, f.Stdio)
			}
		case image.FDEpoll:
			if len(f.Epoll) > maxEpollEntries {
				return fmt.Errorf("fd %d: %d epoll entries", f.Num, len(f.Epoll))
			}
		case image.FDEventfd, image.FDPipe, image.FDUnix:
		case image.FDPty:
			if f.Pty == nil || f.Pty.Index < 0 {
				return fmt.Errorf("fd %d: a terminal descriptor without its terminal", f.Num)
			}
		case image.FDInet:
			if err := inetsock.Validate(f.Inet); err != nil {
				return fmt.Errorf("fd %d: %v", f.Num, err)
			}
		case image.FDMemfd, image.FDDeleted, image.FDTimerfd, image.FDSignalfd, image.FDInotify:
			// Only the first descriptor of an open file description
			// carries its state; the others share it.
			if f.Contents == nil && f.Anon == nil && !v.stateOFDs[f.OFD] {
				return fmt.Errorf("fd %d: a %s descriptor without its state, and no earlier descriptor of its open file description %d has it", f.Num, f.Kind, f.OFD)
			}
			v.stateOFDs[f.OFD] = true
		default:
			return fmt.Errorf("fd %d: unknown kind %q", f.Num, f.Kind)
		}
		if c := f.Contents; c != nil && !gen.Lists(c.Data) {
			return fmt.Errorf("fd %d: its contents %q are not in the manifest's file list", f.Num, c.Data)
		}
		if f.Pos < 0 {
			return fmt.Errorf("fd %d: offset %d", f.Num, f.Pos)
		}
	}
	return nil
}

// checkSignalsAndTimers checks signal numbers, limits and timers.
func checkSignalsAndTimers(p *image.Process, v *validator) error {
	for i, s := range p.Sigactions {
		if s.Signal < 1 || s.Signal > lastSignal {
			return v.fail(p.PID, "sigactions[%d]: signal %d", i, s.Signal)
		}
	}
	if p.PdeathSignal < 0 || p.PdeathSignal > lastSignal {
		return v.fail(p.PID, "parent-death signal %d", p.PdeathSignal)
	}
	for i, r := range p.Rlimits {
		if r.Resource < 0 || r.Resource >= nRlimits {
			return v.fail(p.PID, "rlimits[%d]: resource %d", i, r.Resource)
		}
	}
	for i, t := range p.Itimers {
		if t.Which < 0 || t.Which > lastItimer {
			return v.fail(p.PID, "itimers[%d]: timer %d", i, t.Which)
		}
	}
	for i, t := range p.PosixTimers {
		switch {
		case t.ID < 0:
			return v.fail(p.PID, "posix_timers[%d]: id %d", i, t.ID)
		case t.Signal < 0 || t.Signal > lastSignal:
			return v.fail(p.PID, "posix_timers[%d]: signal %d", i, t.Signal)
		case t.ID > maxTimerPlaceholders && !kernel.Has(kernel.TimerRestoreIDs):
			return v.fail(p.PID, "posix_timers[%d]: id %d needs more than %d placeholder timers on a kernel without prctl(PR_TIMER_CREATE_RESTORE_IDS) (%s)",
				i, t.ID, maxTimerPlaceholders, kernel.Current().Why(kernel.TimerRestoreIDs))
		}
	}
	return nil
}

// pidMax is the node's highest pid.
func pidMax() int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return 1 << 22 // PID_MAX_LIMIT on 64-bit
}
