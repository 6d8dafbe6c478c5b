package engine

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// Restartable sequences. glibc 2.35 and later register an rseq area for
// every thread, and the kernel writes the thread's CPU into it on every
// return to user space: a restored thread must have its area registered
// again, at the same address, or glibc's sched_getcpu reads a stale CPU
// (and code that runs restartable sequences is no longer restarted).
//
// The registration is read with PTRACE_GET_RSEQ_CONFIGURATION (5.13). On
// older kernels it is worked out from glibc itself: glibc keeps the area at
// a fixed offset from every thread's thread pointer, which it exports as
// __rseq_offset, with __rseq_size 0 when it registered nothing; a thread
// whose area holds a CPU number (not -1 or -2, glibc's "not registered")
// is registered. A program whose glibc cannot be read that way (static and
// stripped) is taken as not registered: jobs launched on such kernels run
// with glibc's rseq off (see RseqTunable).

// Glibc's rseq constants on x86-64.
const (
	rseqSignature = 0x53053053
	// rseqAreaSize is the length glibc registers, and the only one kernels
	// before 6.3 accept.
	rseqAreaSize = 32
	// rseqCPUIDOffset is where struct rseq holds cpu_id.
	rseqCPUIDOffset = 4
)

// RseqTunable is the glibc tunable that keeps glibc from registering rseq
// areas, for jobs launched where the kernel cannot report them.
const RseqTunable = "glibc.pthread.rseq=0"

// rseqFinder finds the rseq registrations of one process's threads.
type rseqFinder struct {
	rem     *inject.Process
	hostPID int
	// glibc is read once per process: offset is __rseq_offset, and
	// registered is false when glibc registered no area (or is not there).
	looked     bool
	registered bool
	offset     int64
}

// dumpRseq returns the rseq registration of thread th, or nil.
func (f *rseqFinder) dumpRseq(t *ptrace.Tracer, th *ptrace.Thread) (*image.Rseq, error) {
	if kernel.Has(kernel.PtraceRseq) {
		c, err := t.GetRseq(th.TID)
		if err != nil || c.Ptr == 0 {
			return nil, err
		}
		return &image.Rseq{Ptr: c.Ptr, Size: c.Size, Signature: c.Signature, Flags: c.Flags}, nil
	}
	if !f.looked {
		f.looked = true
		var err error
		f.registered, f.offset, err = glibcRseqOffset(f.rem, f.hostPID)
		if err != nil {
			return nil, fmt.Errorf("rseq area (no PTRACE_GET_RSEQ_CONFIGURATION here): %w", err)
		}
	}
	if !f.registered {
		return nil, nil
	}
	ptr := uint64(int64(ptrace.ThreadPointer(&th.Saved)) + f.offset)
	b := make([]byte, 4)
	if err := f.rem.Read(ptr+rseqCPUIDOffset, b); err != nil {
		return nil, fmt.Errorf("rseq area of thread %d at %#x: %w", th.TID, ptr, err)
	}
	if int32(binary.LittleEndian.Uint32(b)) < 0 {
		return nil, nil
	}
	return &image.Rseq{Ptr: ptr, Size: rseqAreaSize, Signature: rseqSignature}, nil
}

// restoreRseq registers the thread's recorded rseq area again.
func (r *restorer) restoreRseq(th *ptrace.Thread, rs *image.Rseq) error {
	if rs == nil {
		return nil
	}
	_, err := th.Call("rseq", unix.SYS_RSEQ, rs.Ptr, uint64(rs.Size), 0, uint64(rs.Signature))
	return err
}

// glibcRseqOffset reads glibc's __rseq_offset and __rseq_size in the
// process: from the symbols of the object that defines them (the dynamic
// loader, or the executable of a static program), at the address that
// object is loaded at. A process with no such object has registered nothing
// through glibc.
func glibcRseqOffset(rem *inject.Process, hostPID int) (registered bool, offset int64, err error) {
	maps, err := proc.ReadMaps(hostPID)
	if err != nil {
		return false, 0, err
	}
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(hostPID) + "/exe")
	for _, obj := range loadedObjects(maps) {
		if !glibcObject(filepath.Base(obj.path)) && obj.path != exe {
			continue
		}
		offAddr, sizeAddr, ok, err := rseqSymbols(fmt.Sprintf("/proc/%d/root%s", hostPID, obj.path), obj)
		if err != nil {
			return false, 0, fmt.Errorf("%s: %w", obj.path, err)
		}
		if !ok {
			continue
		}
		b := make([]byte, 8)
		if err := rem.Read(sizeAddr, b[:4]); err != nil {
			return false, 0, fmt.Errorf("%s: read __rseq_size: %w", obj.path, err)
		}
		if binary.LittleEndian.Uint32(b[:4]) == 0 {
			return false, 0, nil
		}
		if err := rem.Read(offAddr, b); err != nil {
			return false, 0, fmt.Errorf("%s: read __rseq_offset: %w", obj.path, err)
		}
		return true, int64(binary.LittleEndian.Uint64(b)), nil
	}
	return false, 0, nil
}

// glibcObject reports whether a file name is glibc's dynamic loader or C
// library, where __rseq_offset may be defined.
func glibcObject(name string) bool {
	for _, p := range []string{"ld-linux", "ld-2.", "libc.so", "libc-2."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// loadedObject is a file mapped from offset 0: an ELF object and the
// address its first byte is at.
type loadedObject struct {
	path  string
	start uint64
}

// loadedObjects lists the files the process has mapped from offset 0, once
// each, executable first.
func loadedObjects(maps []proc.Mapping) []loadedObject {
	var out []loadedObject
	seen := map[string]bool{}
	for _, m := range maps {
		if m.Offset != 0 || !strings.HasPrefix(m.Path, "/") || seen[m.Path] {
			continue
		}
		seen[m.Path] = true
		out = append(out, loadedObject{path: m.Path, start: m.Start})
	}
	return out
}

// rseqSymbols finds __rseq_offset and __rseq_size in the ELF file at path,
// loaded at obj.start, and returns their run-time addresses; ok is false
// when the file does not define them.
func rseqSymbols(path string, obj loadedObject) (offAddr, sizeAddr uint64, ok bool, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, 0, false, err
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil || len(syms) == 0 {
		// A static program keeps them in its symbol table, if not stripped.
		if syms, err = f.Symbols(); errors.Is(err, elf.ErrNoSymbols) {
			return 0, 0, false, nil
		} else if err != nil {
			return 0, 0, false, err
		}
	}
	var off, size uint64
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF {
			continue // libc.so.6 refers to the dynamic loader's
		}
		switch s.Name {
		case "__rseq_offset":
			off = s.Value
		case "__rseq_size":
			size = s.Value
		}
	}
	if off == 0 || size == 0 {
		return 0, 0, false, nil
	}
	// The first PT_LOAD segment is the one mapped at obj.start.
	var first uint64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			first = p.Vaddr &^ (pageSize - 1)
			break
		}
	}
	bias := obj.start - first
	return off + bias, size + bias, true, nil
}
