package memory

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fileid"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// vmFlagsKept are the smaps VmFlags a restore re-applies with madvise/mmap.
var vmFlagsKept = map[string]bool{
	"gd": true, // MAP_GROWSDOWN
	"dc": true, // MADV_DONTFORK
	"dd": true, // MADV_DONTDUMP
	"hg": true, // MADV_HUGEPAGE
	"nh": true, // MADV_NOHUGEPAGE
	"wf": true, // MADV_WIPEONFORK
}

// classifyVMA turns an smaps entry into an image VMA, or explains why the
// mapping cannot be checkpointed yet.
func classifyVMA(pid int, m *proc.Mapping) (image.VMA, error) {
	if m.Shared() && strings.HasSuffix(m.Path, " (deleted)") {
		if p := relinkedPath(pid, m); p != "" {
			named := *m
			named.Path = p
			m = &named
		}
	}
	v := image.VMA{Start: m.Start, End: m.End, Offset: m.Offset, Name: m.Path}
	if m.Readable() {
		v.Prot |= unix.PROT_READ
	}
	if m.Writable() {
		v.Prot |= unix.PROT_WRITE
	}
	if m.Executable() {
		v.Prot |= unix.PROT_EXEC
	}
	for _, f := range m.VmFlags {
		if vmFlagsKept[f] {
			v.VmFlags = append(v.VmFlags, f)
		}
	}
	switch {
	case m.Path == "[vdso]":
		v.Kind = image.VMAVDSO
	case m.Path == "[vvar]":
		v.Kind = image.VMAVVar
	case m.Path == "[vvar_vclock]":
		v.Kind = image.VMAVVarVClock
	case m.Path == "[vsyscall]":
		v.Kind = image.VMAVsyscall
	case (m.Path == "" || m.Path == "[heap]" || m.Path == "[stack]" || strings.HasPrefix(m.Path, "[anon:")) && !m.Shared():
		v.Kind = image.VMAAnon
	case IsSysVShmPath(m.Path):
		// The inode number of a segment's file is its shmid; without
		// VM_MAYWRITE the segment was attached with SHM_RDONLY.
		v.Kind = image.VMASysVShm
		v.SysVShm = &image.SysVShmAttach{ID: int(m.Inode), ReadOnly: !m.HasFlag("mw")}
	case m.Path == "" || strings.HasPrefix(m.Path, "/memfd:") || strings.HasSuffix(m.Path, " (deleted)"):
		// Shared memory (MAP_SHARED|MAP_ANONYMOUS shows as a deleted
		// /dev/zero), a memfd, or a file deleted while mapped: nothing
		// can open it again by path, so its pages are saved.
		if m.Shared() {
			v.Kind = image.VMAAnonShared
			v.Shmem = m.Dev + ":" + strconv.FormatUint(m.Inode, 10)
		} else {
			v.Kind = image.VMAFileGone
		}
	case strings.HasPrefix(m.Path, "["):
		return v, fmt.Errorf("pid %d: special mapping %s at %#x is not supported", pid, m.Path, m.Start)
	case strings.HasPrefix(m.Path, "/"):
		id, err := fileid.OfProc(pid, m.Path)
		if err != nil {
			return v, fmt.Errorf("pid %d: mapping %#x-%#x: %w", pid, m.Start, m.End, err)
		}
		v.File = id
		if m.Shared() {
			v.Kind = image.VMAFileShared
		} else {
			v.Kind = image.VMAFilePrivate
		}
	default:
		return v, fmt.Errorf("pid %d: mapping %#x-%#x of %q is not supported", pid, m.Start, m.End, m.Path)
	}
	return v, nil
}

// dumpPage reports whether a page with pagemap entry e in a VMA of kind k
// holds data that only the image can give back.
func dumpPage(k image.VMAKind, e uint64) bool {
	if e&proc.PageGuardRegion != 0 {
		// A guard region reads as swapped but has no data; reading it
		// faults. It is re-installed from VMA.GuardPages.
		return false
	}
	switch k {
	case image.VMAAnon:
		return e&(proc.PagePresent|proc.PageSwapped) != 0
	case image.VMAFilePrivate:
		// A present page that is still the file's page is re-read from
		// the file at restore; only private copies are dumped.
		return e&proc.PageSwapped != 0 || (e&proc.PagePresent != 0 && e&proc.PageFileShared == 0)
	case image.VMAAnonShared, image.VMAFileGone:
		// Shared pages stay in the shmem object even when this process's
		// page table lost them, and pages of a private mapping that were
		// never copied come from a file no one can open again: every page
		// is read.
		return true
	}
	return false
}

// skipZero reports whether all-zero pages of a VMA of kind k can be left
// out of the image, because the restored mapping reads as zero there anyway.
func skipZero(k image.VMAKind) bool {
	return k == image.VMAAnon || k == image.VMAAnonShared || k == image.VMAFileGone
}

// ReadVMAs classifies the mappings of pid. Guard pages are filled in by
// the page dump, which walks pagemap anyway.
func ReadVMAs(pid int) ([]image.VMA, error) {
	maps, err := proc.ReadSmaps(pid)
	if err != nil {
		return nil, err
	}
	out := make([]image.VMA, 0, len(maps))
	for i := range maps {
		v, err := classifyVMA(pid, &maps[i])
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// mmapFlags returns the mmap flags that re-create v.
func mmapFlags(v *image.VMA) uint64 {
	var f uint64 = unix.MAP_FIXED
	switch v.Kind {
	case image.VMAAnon, image.VMAFileGone:
		f |= unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	case image.VMAAnonShared:
		if v.Shmem != "" {
			f |= unix.MAP_SHARED // of the memfd that stands for the object
		} else {
			f |= unix.MAP_SHARED | unix.MAP_ANONYMOUS
		}
	case image.VMAFilePrivate:
		f |= unix.MAP_PRIVATE
	case image.VMAFileShared:
		f |= unix.MAP_SHARED
	}
	if hasVmFlag(v, "gd") {
		f |= unix.MAP_GROWSDOWN
	}
	return f
}

func hasVmFlag(v *image.VMA, f string) bool {
	for _, x := range v.VmFlags {
		if x == f {
			return true
		}
	}
	return false
}

// madvFlags lists the madvise advice that re-applies v's VmFlags.
func madvFlags(v *image.VMA) []int {
	var out []int
	for _, f := range v.VmFlags {
		switch f {
		case "dc":
			out = append(out, unix.MADV_DONTFORK)
		case "dd":
			out = append(out, unix.MADV_DONTDUMP)
		case "hg":
			out = append(out, unix.MADV_HUGEPAGE)
		case "nh":
			out = append(out, unix.MADV_NOHUGEPAGE)
		case "wf":
			out = append(out, unix.MADV_WIPEONFORK)
		}
	}
	return out
}

// madvGuardInstall is MADV_GUARD_INSTALL (Linux 6.13).
const madvGuardInstall = 102

// mapVMAs re-creates every mapping of the process in the stub, except the
// kernel's special mappings, which placeSpecialMappings moves into place.
// Mappings that receive page data are created writable; finishVMAs sets
// the recorded protection once the data is in.
func (r *Restorer) mapVMAs() error {
	p := r.Img
	withPages := vmasWithPages(p)
	files := map[string]uint64{} // path → fd in the stub, opened once per file
	defer func() {
		for _, fd := range files {
			r.P.Main.Syscall(unix.SYS_CLOSE, fd)
		}
	}()
	for i := range p.VMAs {
		v := &p.VMAs[i]
		if isSpecial(v.Kind) {
			continue
		}
		if v.Kind == image.VMASysVShm {
			if err := r.AttachSysVShm(v); err != nil {
				return fmt.Errorf("mapping %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
			}
			continue
		}
		prot := uint64(v.Prot)
		if withPages[i] {
			prot |= unix.PROT_READ | unix.PROT_WRITE
		}
		fd := ^uint64(0)
		if v.File != nil {
			var ok bool
			if fd, ok = files[v.File.Path]; !ok {
				flags := uint64(unix.O_RDONLY | unix.O_CLOEXEC)
				if v.Kind == image.VMAFileShared && v.Prot&unix.PROT_WRITE != 0 {
					flags = unix.O_RDWR | unix.O_CLOEXEC
				}
				var err error
				fd, err = r.P.Openat(v.File.Path, flags, 0)
				if err != nil {
					return fmt.Errorf("mapping %#x-%#x: %w", v.Start, v.End, err)
				}
				files[v.File.Path] = fd
			}
		}
		if v.Shmem != "" {
			var err error
			if fd, err = r.Shmem(v); err != nil {
				return fmt.Errorf("mapping %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
			}
		}
		addr, err := r.P.Main.Call("mmap", unix.SYS_MMAP, v.Start, v.End-v.Start, prot, mmapFlags(v), fd, v.Offset)
		if v.Shmem != "" {
			if _, cerr := r.P.Main.Call("close", unix.SYS_CLOSE, fd); cerr != nil && err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("mapping %#x-%#x %s: %w", v.Start, v.End, v.Name, err)
		}
		if addr != v.Start {
			return fmt.Errorf("mapping %#x-%#x %s: kernel placed it at %#x", v.Start, v.End, v.Name, addr)
		}
		for _, adv := range madvFlags(v) {
			if _, err := r.P.Main.Call("madvise", unix.SYS_MADVISE, v.Start, v.End-v.Start, uint64(adv)); err != nil {
				r.Log.Debugf("pid %d: madvise(%#x, %d) on %#x: %v", p.PID, v.Start, adv, v.End-v.Start, err)
			}
		}
	}
	return nil
}

// finishVMAs sets the recorded protection on mappings that were created
// writable for their page data, and re-installs guard regions.
func (r *Restorer) finishVMAs() error {
	p := r.Img
	withPages := vmasWithPages(p)
	for i := range p.VMAs {
		v := &p.VMAs[i]
		if isSpecial(v.Kind) {
			continue
		}
		if withPages[i] && uint64(v.Prot) != uint64(v.Prot)|unix.PROT_READ|unix.PROT_WRITE {
			if _, err := r.P.Main.Call("mprotect", unix.SYS_MPROTECT, v.Start, v.End-v.Start, uint64(v.Prot)); err != nil {
				return fmt.Errorf("mapping %#x-%#x: %w", v.Start, v.End, err)
			}
		}
		for _, pg := range v.GuardPages {
			addr := v.Start + pg*pageSize
			if _, err := r.P.Main.Call("madvise(MADV_GUARD_INSTALL)", unix.SYS_MADVISE, addr, pageSize, madvGuardInstall); err != nil {
				if errno, ok := inject.UnwrapErrno(err); ok && errno == syscall.EINVAL {
					r.Log.Warnf("pid %d: guard page at %#x not re-installed: this kernel has no MADV_GUARD_INSTALL", p.PID, addr)
					continue
				}
				return err
			}
		}
	}
	return nil
}

// vmasWithPages marks the VMAs that receive page data from the image.
func vmasWithPages(p *image.Process) []bool {
	out := make([]bool, len(p.VMAs))
	j := 0
	for _, run := range p.PageRuns {
		for j < len(p.VMAs) && p.VMAs[j].End <= run.Addr {
			j++
		}
		if j < len(p.VMAs) && p.VMAs[j].Start <= run.Addr {
			out[j] = true
		}
	}
	return out
}

func isSpecial(k image.VMAKind) bool {
	return k == image.VMAVDSO || k == image.VMAVVar || k == image.VMAVVarVClock || k == image.VMAVsyscall
}

// IsSysVShmPath reports whether a mapping's path is the kernel's name for a
// System V segment, "/SYSV" and the key in eight hex digits, " (deleted)".
func IsSysVShmPath(path string) bool {
	key, ok := strings.CutPrefix(path, "/SYSV")
	if !ok {
		return false
	}
	key, ok = strings.CutSuffix(key, " (deleted)")
	if !ok || len(key) != 8 {
		return false
	}
	for _, c := range key {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// relinkedPath finds the name a shared mapping shown as deleted still has
// in the same tmpfs directory: glibc's sem_open creates a named semaphore
// under a temporary name, maps it, links it to its own name and removes
// the temporary one. Mapped by that name again, the restored semaphore is
// the one others open by name, and the file moves with the job. "" when
// the file has no other name.
func relinkedPath(pid int, m *proc.Mapping) string {
	dir := filepath.Dir(strings.TrimSuffix(m.Path, " (deleted)"))
	if dir == "/dev" {
		return "" // MAP_SHARED|MAP_ANONYMOUS shows as /dev/zero
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(m.Dev, "%x:%x", &major, &minor); err != nil {
		return ""
	}
	root := fmt.Sprintf("/proc/%d/root", pid)
	var fs unix.Statfs_t
	if err := unix.Statfs(root+dir, &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		return ""
	}
	ents, err := os.ReadDir(root + dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		var st unix.Stat_t
		if unix.Lstat(root+dir+"/"+e.Name(), &st) != nil {
			continue
		}
		if st.Ino == m.Inode && unix.Major(st.Dev) == major && unix.Minor(st.Dev) == minor {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}
