package fds

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/inject"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

const (
	memfdPrefix     = "/memfd:"
	deletedSuffix   = " (deleted)"
	mfdNameMax      = 249 // MFD_NAME_MAX_LEN
	contentsBufSize = 1 << 20
)

// ErrNoContents is returned by dumpFileContents for a descriptor that is
// neither a memfd nor a file deleted while open.
var ErrNoContents = errors.New("not a memfd or a deleted file")

// contentsKind is a file no path leads to: a memfd, or a regular file
// deleted while open. Its data is saved in the image, and it comes back
// as a memfd with that data.
type contentsKind struct{}

func (contentsKind) records() []image.FDKind { return []image.FDKind{image.FDMemfd, image.FDDeleted} }

func (contentsKind) claims(c *dumpCtx) bool {
	t := c.fd.Target
	return strings.HasSuffix(t, deletedSuffix) || strings.HasPrefix(t, memfdPrefix)
}

func (contentsKind) dump(c *dumpCtx, out *image.FD) error {
	if c.first {
		return dumpFileContents(c.p.PID, c.fd, out, c.opts.Writer)
	}
	// Shared with an fd already dumped, which holds the contents.
	kind, _, ok := contentsOf(c.fd.Target)
	if !ok {
		return fmt.Errorf("%s: this kind of file descriptor is not supported yet", c.fd.Target)
	}
	out.Kind = kind
	return nil
}

func (contentsKind) restore(c *restoreCtx, f *image.FD) error {
	fd, err := c.createFromContents(f)
	if err != nil {
		return err
	}
	return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
}

// contentsOf tells from an fd's link target whether its data must be
// saved, and under which name the file is re-created.
func contentsOf(target string) (image.FDKind, string, bool) {
	name, deleted := strings.CutSuffix(target, deletedSuffix)
	switch {
	case !deleted || !strings.HasPrefix(name, "/"):
		return "", "", false
	case strings.HasPrefix(name, memfdPrefix):
		return image.FDMemfd, strings.TrimPrefix(name, memfdPrefix), true
	default:
		return image.FDDeleted, name, true
	}
}

// contentsDataName is the data file holding the contents of fd num of the
// process with (namespace) pid nsPID.
func contentsDataName(nsPID, num int) string {
	return fmt.Sprintf("fd-%d-%d.data", nsPID, num)
}

// dumpFileContents saves the data of a memfd or of a regular file deleted
// while open, which no path leads to any more, into a data file of the
// generation, and records its name, size, mode and seals. Only the ranges
// holding data are stored (SEEK_DATA/SEEK_HOLE), so a sparse file stays
// small. The file is read through a descriptor of its own, opened
// read-only through /proc/PID/fd/N, so the process's offset is untouched.
func dumpFileContents(hostPID int, fd *proc.FD, out *image.FD, w *image.Writer) error {
	kind, name, ok := contentsOf(fd.Target)
	if !ok {
		return fmt.Errorf("%s: %w", fd.Target, ErrNoContents)
	}
	st, err := proc.ReadStatus(strconv.Itoa(hostPID))
	if err != nil {
		return err
	}
	nsPID, err := st.NSPid()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", hostPID, fd.Num), os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		// O_NOATIME needs the file's owner.
		f, err = os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", hostPID, fd.Num), os.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("%s: open its contents for reading: %w", fd.Target, err)
	}
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return fmt.Errorf("%s: %w", fd.Target, err)
	}
	if fst.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: not a regular file (mode %#o)", fd.Target, fst.Mode)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if errors.Is(err, unix.EINVAL) {
		seals, err = 0, nil // not a file that takes seals (a deleted file)
	}
	if err != nil {
		return fmt.Errorf("%s: F_GET_SEALS: %w", fd.Target, err)
	}
	extents, err := dataExtents(f, fst.Size)
	if err != nil {
		return fmt.Errorf("%s: %w", fd.Target, err)
	}
	c := &image.FileContents{Name: name, Data: contentsDataName(nsPID, fd.Num), Size: fst.Size,
		Mode: fst.Mode & 0o7777, Seals: seals, Extents: extents,
		Shmem: fmt.Sprintf("%02x:%02x:%d", unix.Major(fst.Dev), unix.Minor(fst.Dev), fst.Ino)}
	df, err := w.Create(c.Data)
	if err != nil {
		return err
	}
	buf := make([]byte, contentsBufSize)
	for _, e := range extents {
		n, err := io.CopyBuffer(df, io.NewSectionReader(f, e.Off, e.Len), buf)
		if err == nil && n != e.Len {
			err = fmt.Errorf("read %d of %d bytes at %d: the file shrank", n, e.Len, e.Off)
		}
		if err != nil {
			df.Close()
			return fmt.Errorf("%s: copy contents: %w", fd.Target, err)
		}
	}
	if err := df.Close(); err != nil {
		return fmt.Errorf("%s: %w", fd.Target, err)
	}
	out.Kind, out.Path, out.Contents = kind, name, c
	return nil
}

// dataExtents lists the ranges of f that hold data. A file system without
// SEEK_DATA gives the whole file as one range.
func dataExtents(f *os.File, size int64) ([]image.Extent, error) {
	var out []image.Extent
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if errors.Is(err, unix.EINVAL) && off == 0 {
			return []image.Extent{{Off: 0, Len: size}}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", start, err)
		}
		end = min(end, size)
		if end > start {
			out = append(out, image.Extent{Off: start, Len: end - start})
		}
		off = end
	}
	return out, nil
}

// createFromContents re-creates a memfd, or a file that was deleted while
// open, from the data saved in the generation, and returns its
// fd in the process (close-on-exec; the caller moves it to its number and
// sets the recorded flag).
//
// Both come back as a memfd (memfd_create with the recorded name and
// MFD_ALLOW_SEALING): a deleted file has no path to re-open, and the
// process can tell only by its /proc link, which then reads
// "/memfd:PATH (deleted)". The data goes in from the supervisor through a
// duplicate of the new descriptor (pidfd_getfd), then the mode, the open
// flags, the seals and the offset are set as recorded.
func (c *restoreCtx) createFromContents(f *image.FD) (uint64, error) {
	cn := f.Contents
	if cn == nil {
		return 0, fmt.Errorf("%s descriptor without its contents in the image", f.Kind)
	}
	src, err := c.gen.Open(cn.Data)
	if err != nil {
		return 0, fmt.Errorf("contents of %s: %w", cn.Name, err)
	}
	defer src.Close()
	var stored int64
	for _, e := range cn.Extents {
		stored += e.Len
	}
	if st, err := src.Stat(); err != nil {
		return 0, err
	} else if st.Size() != stored {
		return 0, fmt.Errorf("contents of %s: data file %s has %d bytes, the extents need %d", cn.Name, cn.Data, st.Size(), stored)
	}
	var fd uint64
	h, shared := c.Shmem(cn.Shmem)
	if shared && cn.Shmem != "" {
		// Also mapped (restored with the memory) or open elsewhere: the
		// same file, filled again with the same data.
		if fd, err = c.Fetch(c.p, h); err != nil {
			return 0, err
		}
	} else {
		name := cn.Name
		if len(name) > mfdNameMax {
			name = name[:mfdNameMax]
		}
		addr, err := c.p.PutString(0, name)
		if err != nil {
			return 0, err
		}
		if fd, err = c.p.Main.Call("memfd_create", unix.SYS_MEMFD_CREATE, addr, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING); err != nil {
			return 0, err
		}
		if cn.Shmem != "" {
			// The caller moves the descriptor to its number at once.
			c.SetShmem(cn.Shmem, Holder{P: c.p, PID: c.img.PID, FD: uint64(f.Num)})
		}
	}
	final, err := c.fillMemfd(fd, f, src)
	if err != nil {
		c.p.Main.Syscall(unix.SYS_CLOSE, fd)
		if final != fd {
			c.p.Main.Syscall(unix.SYS_CLOSE, final)
		}
		return 0, fmt.Errorf("%s %s: %w", f.Kind, cn.Name, err)
	}
	return final, nil
}

// fillMemfd writes the saved data into memfd fd of the process, re-opens
// it with the recorded access mode when that is not read-write, adds the
// seals and sets the offset. It returns the descriptor to keep.
func (c *restoreCtx) fillMemfd(fd uint64, f *image.FD, src *os.File) (uint64, error) {
	cn := f.Contents
	local, err := getFD(c.p, fd)
	if err != nil {
		return fd, err
	}
	defer local.Close()
	if err := local.Truncate(cn.Size); err != nil {
		return fd, err
	}
	buf := make([]byte, contentsBufSize)
	var pos int64
	for _, e := range cn.Extents {
		n, err := io.CopyBuffer(io.NewOffsetWriter(local, e.Off), io.NewSectionReader(src, pos, e.Len), buf)
		if err == nil && n != e.Len {
			err = fmt.Errorf("short data file")
		}
		if err != nil {
			return fd, fmt.Errorf("write %d bytes at %d: %w", e.Len, e.Off, err)
		}
		pos += e.Len
	}
	if err := local.Chmod(os.FileMode(cn.Mode & 0o777)); err != nil {
		return fd, err
	}
	final := fd
	status := f.Flags & (unix.O_APPEND | unix.O_NONBLOCK | unix.O_NOATIME)
	if f.Flags&unix.O_ACCMODE != unix.O_RDWR {
		// memfd_create opens read-write; another access mode needs an
		// open of its own, through the process's /proc.
		flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_TRUNC | unix.O_EXCL | unix.O_DIRECT)
		if final, err = c.p.Openat(fmt.Sprintf("/proc/self/fd/%d", fd), flags|unix.O_CLOEXEC, 0); err != nil {
			return fd, err
		}
		if _, err := c.p.Main.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return final, err
		}
	} else if status != 0 {
		if _, err := unix.FcntlInt(local.Fd(), unix.F_SETFL, status); err != nil {
			return fd, fmt.Errorf("F_SETFL %#o: %w", status, err)
		}
	}
	have, err := unix.FcntlInt(local.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return final, fmt.Errorf("F_GET_SEALS: %w", err)
	}
	if add := cn.Seals &^ have; add != 0 {
		// Seals need a writable descriptor: local still is one.
		if _, err := unix.FcntlInt(local.Fd(), unix.F_ADD_SEALS, add); err != nil {
			return final, fmt.Errorf("F_ADD_SEALS %#x: %w", add, err)
		}
	}
	if _, err := c.p.Main.Call("lseek", unix.SYS_LSEEK, final, uint64(f.Pos), unix.SEEK_SET); err != nil {
		return final, err
	}
	return final, nil
}

// getFD duplicates fd of process p into the supervisor (PullFD), sharing
// its open file description.
func getFD(p *inject.Process, fd uint64) (*os.File, error) {
	local, err := p.PullFD(fd)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(local), fmt.Sprintf("fd %d of %d", fd, p.PID)), nil
}
