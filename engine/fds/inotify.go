package fds

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

const inotifySearchDepth = 2

// inotifyKind is an inotify instance, re-created with its watches under
// their numbers; each watch is recorded with a path to the watched inode.
type inotifyKind struct{}

func (inotifyKind) records() []image.FDKind { return []image.FDKind{image.FDInotify} }

func (inotifyKind) claims(c *dumpCtx) bool { return c.fd.Target == "anon_inode:inotify" }

func (inotifyKind) dump(c *dumpCtx, out *image.FD) error {
	watches, err := parseInotifyInfo(c.fd.Info)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	for i := range watches {
		if watches[i].Path, err = inotifyPath(c.p.PID, &watches[i]); err != nil {
			return fmt.Errorf("inotify watch %d: %w", watches[i].WD, err)
		}
	}
	out.Kind, out.Anon = image.FDInotify, &image.AnonFD{Inotify: watches}
	return nil
}

func (inotifyKind) restore(c *restoreCtx, f *image.FD) error {
	if f.Anon == nil {
		return fmt.Errorf("inotify descriptor without its state in the image")
	}
	fd, err := c.createInotify(f.Anon.Inotify, f.Flags&unix.O_NONBLOCK != 0)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	return c.moveFD(fd, f.Num, f.Flags&unix.O_CLOEXEC != 0, true)
}

// parseInotifyInfo parses the watch lines of an inotify fdinfo, returned
// in wd order (the kernel lists them newest first):
//
//	inotify wd:2 ino:263 sdev:fe00000 mask:80000002 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:6302000000000000
func parseInotifyInfo(info []string) ([]image.InotifyWatch, error) {
	var out []image.InotifyWatch
	for _, l := range info {
		if !strings.HasPrefix(l, "inotify ") {
			continue
		}
		var w image.InotifyWatch
		var sdev uint64
		have := 0
		for _, f := range strings.Fields(l)[1:] {
			k, v, _ := strings.Cut(f, ":")
			var err error
			var n uint64
			switch k {
			case "wd":
				w.WD, err = strconv.Atoi(v)
				have++
			case "ino":
				w.Ino, err = strconv.ParseUint(v, 16, 64)
				have++
			case "sdev":
				sdev, err = strconv.ParseUint(v, 16, 64)
				have++
			case "mask":
				n, err = strconv.ParseUint(v, 16, 32)
				w.Mask = uint32(n)
				have++
			case "fhandle-type":
				var t int64
				t, err = strconv.ParseInt(v, 16, 32)
				w.HandleType = int32(t)
			case "f_handle":
				w.Handle, err = hex.DecodeString(v)
			}
			if err != nil {
				return nil, fmt.Errorf("fdinfo %q: %s: %w", l, k, err)
			}
		}
		if have != 4 {
			return nil, fmt.Errorf("fdinfo %q: want wd, ino, sdev and mask", l)
		}
		// The kernel prints its own dev_t (major << 20 | minor).
		w.Dev = unix.Mkdev(uint32(sdev>>20), uint32(sdev&0xfffff))
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].WD < out[j].WD })
	return out, nil
}

// inotifyPath finds a path to a watched inode: through its file handle
// when the caller may open handles (CAP_DAC_READ_SEARCH), else by a search
// of the process's cwd and the directories of its open files, to a depth
// of two below each.
func inotifyPath(hostPID int, w *image.InotifyWatch) (string, error) {
	if p, err := pathByHandle(hostPID, w); err == nil {
		return p, nil
	}
	var roots []string
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", hostPID)); err == nil {
		roots = append(roots, cwd)
	}
	if fds, err := proc.ReadFDLinks(hostPID); err == nil {
		for _, fd := range fds {
			t := fd.Target
			if strings.HasPrefix(t, "/") && !strings.HasSuffix(t, " (deleted)") {
				roots = append(roots, filepath.Dir(t), t)
			}
		}
	}
	seen := map[string]bool{}
	for _, root := range roots {
		if seen[root] {
			continue
		}
		seen[root] = true
		if p, ok := searchInode(root, w.Dev, w.Ino, inotifySearchDepth); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("no path found to the watched inode %d on device %d:%d (searched the cwd and the directories of the open files, %d levels deep)",
		w.Ino, unix.Major(w.Dev), unix.Minor(w.Dev), inotifySearchDepth)
}

// pathByHandle opens the watched inode with open_by_handle_at, through a
// mount point of its file system in the process's mount table, and
// returns the path the kernel shows for it.
func pathByHandle(hostPID int, w *image.InotifyWatch) (string, error) {
	if len(w.Handle) == 0 {
		return "", fmt.Errorf("no file handle")
	}
	mnt, err := mountOfDev(hostPID, w.Dev)
	if err != nil {
		return "", err
	}
	// Not O_PATH: open_by_handle_at does not take an O_PATH mount fd.
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(w.HandleType, w.Handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("open_by_handle_at: %w", err)
	}
	defer unix.Close(fd)
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	if !sameInode(p, w.Dev, w.Ino) {
		return "", fmt.Errorf("handle resolves to %s, which is not inode %d", p, w.Ino)
	}
	return p, nil
}

// mountOfDev finds a mount point of device dev in the mount table of pid.
func mountOfDev(pid int, dev uint64) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	major, minor := int(unix.Major(dev)), int(unix.Minor(dev))
	mounts, err := mountinfo.GetMountsFromReader(f, func(mi *mountinfo.Info) (skip, stop bool) {
		return mi.Major != major || mi.Minor != minor, false
	})
	if err != nil {
		return "", err
	}
	if len(mounts) == 0 {
		return "", fmt.Errorf("no mount of device %d:%d", major, minor)
	}
	// The mount point as the process sees it; the supervisor shares the
	// host's view of the job's file systems.
	return fmt.Sprintf("/proc/%d/root%s", pid, mounts[0].Mountpoint), nil
}

// sameInode reports whether path (not followed if a symlink) is inode ino
// on device dev.
func sameInode(path string, dev, ino uint64) bool {
	var st unix.Stat_t
	return unix.Lstat(path, &st) == nil && st.Dev == dev && st.Ino == ino
}

// searchInode looks for inode (dev, ino) at root and below it, depth
// levels deep, without crossing into other file systems.
func searchInode(root string, dev, ino uint64, depth int) (string, bool) {
	if sameInode(root, dev, ino) {
		return root, true
	}
	if depth == 0 {
		return "", false
	}
	var st unix.Stat_t
	if unix.Lstat(root, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", false
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return "", false
	}
	for _, e := range ents {
		if p, ok := searchInode(filepath.Join(root, e.Name()), dev, ino, depth-1); ok {
			return p, true
		}
	}
	return "", false
}

// createInotify re-creates an inotify instance with its watches under their
// original numbers. The kernel hands out watch descriptors in increasing
// order from 1 (cyclically); a gap left by a removed watch is consumed by
// adding and removing a watch on the next path, and the IN_IGNORED events
// this queues are read off again.
func (c *restoreCtx) createInotify(watches []image.InotifyWatch, nonblock bool) (uint64, error) {
	flags := uint64(unix.IN_CLOEXEC)
	if nonblock {
		flags |= unix.IN_NONBLOCK
	}
	fd, err := c.p.Main.Call("inotify_init1", unix.SYS_INOTIFY_INIT1, flags)
	if err != nil {
		return 0, err
	}
	fail := func(err error) (uint64, error) {
		c.p.Main.Syscall(unix.SYS_CLOSE, fd)
		return 0, err
	}
	sorted := append([]image.InotifyWatch(nil), watches...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].WD < sorted[j].WD })
	skipped := false
	added := map[int]bool{}
	for _, w := range sorted {
		addr, err := c.p.PutString(0, w.Path)
		if err != nil {
			return fail(err)
		}
		// The recorded path names the watched inode itself, symlink or
		// not; the mask carries IN_ONESHOT and IN_EXCL_UNLINK.
		mask := uint64(w.Mask) | unix.IN_DONT_FOLLOW
		for {
			wd, err := c.p.Main.Call("inotify_add_watch "+w.Path, unix.SYS_INOTIFY_ADD_WATCH, fd, addr, mask)
			if err != nil {
				return fail(fmt.Errorf("watch %d: %w", w.WD, err))
			}
			if int(wd) == w.WD {
				added[w.WD] = true
				break
			}
			if added[int(wd)] || int(wd) > w.WD {
				return fail(fmt.Errorf("watch %d on %s: the kernel gave watch descriptor %d; the recorded number cannot be had (is the inode watched twice?)", w.WD, w.Path, wd))
			}
			if _, err := c.p.Main.Call("inotify_rm_watch", unix.SYS_INOTIFY_RM_WATCH, fd, wd); err != nil {
				return fail(err)
			}
			skipped = true
		}
	}
	if skipped {
		if err := c.drainInotify(fd); err != nil {
			return fail(err)
		}
	}
	return fd, nil
}

// drainInotify reads the events queued on a fresh inotify instance.
func (c *restoreCtx) drainInotify(fd uint64) error {
	const bufSize = 4096
	addr, err := c.p.ScratchAt(0, bufSize)
	if err != nil {
		return err
	}
	// Non-blocking while drained, so that reading an empty queue returns.
	fl, err := c.p.Main.Call("fcntl(F_GETFL)", unix.SYS_FCNTL, fd, unix.F_GETFL)
	if err != nil {
		return err
	}
	if _, err := c.p.Main.Call("fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		return err
	}
	for {
		ret, err := c.p.Main.Syscall(unix.SYS_READ, fd, addr, bufSize)
		if err != nil {
			return err
		}
		if ret == -int64(unix.EAGAIN) {
			break
		}
		if ret < 0 {
			return fmt.Errorf("read inotify events: %w", unix.Errno(-ret))
		}
	}
	_, err = c.p.Main.Call("fcntl(F_SETFL)", unix.SYS_FCNTL, fd, unix.F_SETFL, fl)
	return err
}
