package memory

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/abi"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// AttachSysVShm attaches the re-created segment of v at v.Start in the
// stub (Restore does so for every System V mapping), with the rights of the original attach (SHM_RDONLY, SHM_EXEC),
// then sets v's protection. A mapping that shows only part of the segment
// (split by munmap or mprotect) is attached whole elsewhere and the part
// moved into place, so that it keeps its offset in the segment.
// Precondition: restoreSysVIPC has re-created the segment.
func (r *Restorer) AttachSysVShm(v *image.VMA) error {
	if v.SysVShm == nil {
		return errors.New("no segment recorded for this System V shared memory mapping")
	}
	id := uint64(v.SysVShm.ID)
	buf, err := r.P.ScratchAt(0, abi.ShmidDsSize)
	if err != nil {
		return err
	}
	if _, err := r.P.Main.Call(fmt.Sprintf("shmctl(%d, IPC_STAT)", id), unix.SYS_SHMCTL, id, unix.IPC_STAT, buf); err != nil {
		return fmt.Errorf("segment %d (System V) was not restored: %w", id, err)
	}
	ds := make([]byte, abi.ShmidDsSize)
	if err := r.P.Read(buf, ds); err != nil {
		return err
	}
	segSize := (abi.Order.Uint64(ds[abi.OffShmSegsz:]) + pageSize - 1) &^ (pageSize - 1)
	length := v.End - v.Start
	if v.Offset+length > segSize {
		return fmt.Errorf("segment %d (System V) has %d bytes, the mapping needs %d at offset %d", id, segSize, length, v.Offset)
	}
	var flags uint64
	attachProt := uint64(unix.PROT_READ | unix.PROT_WRITE)
	if v.SysVShm.ReadOnly {
		flags |= abi.ShmRdonly
		attachProt = unix.PROT_READ
	}
	if v.Prot&unix.PROT_EXEC != 0 {
		flags |= abi.ShmExec
		attachProt |= unix.PROT_EXEC
	}
	name := fmt.Sprintf("shmat(%d)", id)
	if v.Offset == 0 && length == segSize {
		addr, err := r.P.Main.Call(name, unix.SYS_SHMAT, id, v.Start, flags|abi.ShmRemap)
		if err != nil {
			return err
		}
		if addr != v.Start {
			return fmt.Errorf("%s: the kernel attached it at %#x", name, addr)
		}
	} else {
		tmp, err := r.P.Main.Call(name, unix.SYS_SHMAT, id, 0, flags)
		if err != nil {
			return err
		}
		if _, err := r.P.Main.Call("mremap", unix.SYS_MREMAP, tmp+v.Offset, length, length,
			unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, v.Start); err != nil {
			r.P.Main.Syscall(unix.SYS_MUNMAP, tmp, segSize)
			return err
		}
		if v.Offset > 0 {
			if _, err := r.P.Main.Call("munmap", unix.SYS_MUNMAP, tmp, v.Offset); err != nil {
				return err
			}
		}
		if rest := segSize - v.Offset - length; rest > 0 {
			if _, err := r.P.Main.Call("munmap", unix.SYS_MUNMAP, tmp+v.Offset+length, rest); err != nil {
				return err
			}
		}
	}
	if uint64(v.Prot) != attachProt {
		if _, err := r.P.Main.Call("mprotect", unix.SYS_MPROTECT, v.Start, length, uint64(v.Prot)); err != nil {
			return err
		}
	}
	for _, adv := range madvFlags(v) {
		if _, err := r.P.Main.Call("madvise", unix.SYS_MADVISE, v.Start, length, uint64(adv)); err != nil {
			r.Log.Debugf("madvise(%#x, %d) on %#x: %v", v.Start, adv, length, err)
		}
	}
	return nil
}
