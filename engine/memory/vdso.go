package memory

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/stub"
)

// The vDSO: libc (and the Go runtime) cache pointers into it, so a restored
// process must find the kernel's fresh vDSO and vvar pages exactly where the
// old ones were. Both are moved with mremap; a different vDSO (another
// kernel) is refused, since its code offsets would not match the cached
// pointers.

// ReadVDSO records the vDSO of a process and returns the address of a
// `syscall` instruction inside it, which dump-time injection uses.
func ReadVDSO(pid int, vmas []image.VMA) (image.VDSO, uint64, error) {
	for _, v := range vmas {
		if v.Kind != image.VMAVDSO {
			continue
		}
		code := make([]byte, v.End-v.Start)
		rem := inject.Process{PID: pid}
		if err := rem.Read(v.Start, code); err != nil {
			return image.VDSO{}, 0, fmt.Errorf("read vdso: %w", err)
		}
		sum := sha256.Sum256(code)
		i := bytes.Index(code, inject.SyscallInsn)
		if i < 0 {
			return image.VDSO{}, 0, fmt.Errorf("pid %d: no syscall instruction in the vdso", pid)
		}
		return image.VDSO{SHA256: hex.EncodeToString(sum[:]), Size: uint64(len(code))}, v.Start + uint64(i), nil
	}
	return image.VDSO{}, 0, fmt.Errorf("pid %d has no vdso mapping; processes without a vdso are not supported", pid)
}

// special is one of the stub's own special mappings, parked in the stub's
// reserved range.
type special struct {
	kind image.VMAKind
	at   uint64
	size uint64
}

// parkSpecialMappings moves the stub's vvar/vdso pages into the stub's own
// reserved range, checks the vDSO against the image, and unmaps everything
// else the kernel gave the stub (its stack), leaving an empty address space
// but for the stub itself.
func (r *Restorer) parkSpecialMappings() ([]special, error) {
	maps, err := proc.ReadMaps(r.P.PID)
	if err != nil {
		return nil, err
	}
	park := r.Layout.End - stub.ParkSize
	var lowest uint64 = ^uint64(0)
	for _, m := range maps {
		if k := specialKind(m.Path); k != "" && k != image.VMAVsyscall && m.Start < lowest {
			lowest = m.Start
		}
	}
	var out []special
	for _, m := range maps {
		k := specialKind(m.Path)
		if k == "" || k == image.VMAVsyscall {
			continue
		}
		to := park + (m.Start - lowest)
		if to+m.Size() > r.Layout.End {
			return nil, fmt.Errorf("special mappings span %d bytes, more than the %d reserved", to+m.Size()-park, stub.ParkSize)
		}
		if _, err := r.P.Main.Call("mremap "+m.Path, unix.SYS_MREMAP, m.Start, m.Size(), m.Size(), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to); err != nil {
			return nil, err
		}
		out = append(out, special{kind: k, at: to, size: m.Size()})
	}
	for _, s := range out {
		if s.kind != image.VMAVDSO {
			continue
		}
		code := make([]byte, s.size)
		if err := r.P.Read(s.at, code); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(code)
		if hex.EncodeToString(sum[:]) != r.Img.VDSO.SHA256 {
			return nil, fmt.Errorf("this kernel's vDSO differs from the one the checkpoint was taken with (%s); restart on a node running the same kernel", describeKernelMismatch())
		}
	}
	// Everything below and above the stub goes: the stub's stack and
	// whatever else the kernel mapped.
	if _, err := r.P.Main.Call("munmap low", unix.SYS_MUNMAP, MinAddr(), r.Layout.Base-MinAddr()); err != nil {
		return nil, err
	}
	if _, err := r.P.Main.Call("munmap high", unix.SYS_MUNMAP, r.Layout.End, abi.TaskSize-r.Layout.End); err != nil {
		return nil, err
	}
	return out, nil
}

// placeSpecialMappings moves the parked vvar/vdso pages onto the addresses
// recorded in the image.
func (r *Restorer) placeSpecialMappings(parked []special) error {
	want := map[image.VMAKind]image.VMA{}
	for _, v := range r.Img.VMAs {
		if isSpecial(v.Kind) && v.Kind != image.VMAVsyscall {
			want[v.Kind] = v
		}
	}
	if len(want) != len(parked) {
		return fmt.Errorf("the image has %d vdso/vvar mappings, this kernel %d; restart on a node running the same kernel", len(want), len(parked))
	}
	for _, s := range parked {
		v, ok := want[s.kind]
		if !ok || v.End-v.Start != s.size {
			return fmt.Errorf("%s mapping is %d bytes here, %d in the image; restart on a node running the same kernel", s.kind, s.size, v.End-v.Start)
		}
		if _, err := r.P.Main.Call("mremap "+string(s.kind), unix.SYS_MREMAP, s.at, s.size, s.size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, v.Start); err != nil {
			return err
		}
	}
	return nil
}

func specialKind(path string) image.VMAKind {
	switch path {
	case "[vdso]":
		return image.VMAVDSO
	case "[vvar]":
		return image.VMAVVar
	case "[vvar_vclock]":
		return image.VMAVVarVClock
	case "[vsyscall]":
		return image.VMAVsyscall
	}
	return ""
}

func describeKernelMismatch() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "kernel unknown"
	}
	return "running kernel " + unix.ByteSliceToString(u.Release[:])
}
