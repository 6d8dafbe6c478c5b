package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

// Node-local files. A requeued job resumes on whatever node is free, where
// what only its old node had is gone: files on tmpfs (/dev/shm, where POSIX
// shared memory and semaphores live, and /tmp on many nodes) and files the
// job was writing on a local disk. The checkpoint saves the ones the job
// has open or mapped (up to a limit); the restart creates those that are
// missing, with their contents, mode and mtime, before anything checks or
// opens them. Files on shared file systems, and files the job only reads
// from a local disk (its programs and libraries, which every node has),
// stay references, checked where they are.

// DefaultLocalLimit bounds the node-local data one checkpoint saves.
const DefaultLocalLimit = 1 << 30

// Filesystem magic numbers (statfs f_type).
const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
)

// sharedFilesystems are file systems a file on is reached the same way
// from every node of a cluster (or, for read-only images, is there on
// every node): their files are references.
var sharedFilesystems = map[int64]string{
	0x6969:     "nfs",
	0x517b:     "smb",
	0xff534d42: "cifs",
	0xfe534d42: "smb2",
	0x0bd00bd0: "lustre",
	0x47504653: "gpfs",
	0x00c36400: "ceph",
	0x65735546: "fuse",
	0x5346414f: "afs",
	0x6b414653: "kafs",
	0x01021997: "9p",
	0x7461636f: "ocfs2",
	0x01161970: "gfs2",
	0xaad7aaea: "panfs",
	0x20030528: "orangefs",
	0x19830326: "beegfs",
	0x73717368: "squashfs",
	0x9660:     "iso9660",
	0x794c7630: "overlay",
}

// sharedMountTypes are the mount types (mountinfo's) of the same file
// systems. They decide first: a 9p or virtiofs mount reports the statfs
// magic of the file system its server exports from, which may be a local
// disk or a tmpfs of the host.
var sharedMountTypes = map[string]bool{
	"nfs": true, "nfs4": true, "smb3": true, "cifs": true, "lustre": true, "gpfs": true, "ceph": true,
	"afs": true, "9p": true, "virtiofs": true, "ocfs2": true, "gfs2": true, "panfs": true, "orangefs": true,
	"beegfs": true, "squashfs": true, "iso9660": true, "overlay": true, "fuse": true, "fuseblk": true,
}

// sharedMountType says whether a mount of type mountType (mountinfo's
// name, "" when unknown) is one of sharedMountTypes.
func sharedMountType(mountType string) bool {
	return sharedMountTypes[mountType] || strings.HasPrefix(mountType, "fuse.")
}

// localKind says whether a file on a file system of type fsType, on a
// mount of type mountType, is node-local, and why; "" for a reference.
// written says the job writes it.
func localKind(fsType int64, mountType string, written bool) string {
	switch {
	case sharedMountType(mountType):
		return ""
	case fsType == tmpfsMagic:
		return "tmpfs"
	case fsType == ramfsMagic:
		return "ramfs"
	case sharedFilesystems[fsType] != "":
		return ""
	case written:
		return "local disk"
	}
	return ""
}

// localKey names a file by device and inode.
type localKey struct{ dev, ino uint64 }

// localSaver saves the node-local files of one checkpoint.
type localSaver struct {
	// limit bounds the bytes saved, used counts them.
	limit, used int64
	// seen are the files already considered, by device and inode.
	seen map[localKey]bool
	// mountTypes are the types of each process's mounts, by mount id.
	mountTypes map[int]map[uint64]string
}

func newLocalSaver(limit int64) *localSaver {
	if limit <= 0 {
		limit = DefaultLocalLimit
	}
	return &localSaver{limit: limit, seen: map[localKey]bool{}, mountTypes: map[int]map[uint64]string{}}
}

// saveLocalFiles saves the node-local files process p (host pid hostPID)
// has open or mapped that no process saved before. The job is stopped, so
// the contents are those of the checkpoint.
func (jd *jobDump) saveLocalFiles(hostPID int, p *image.Process) error {
	for _, v := range p.VMAs {
		if v.File == nil {
			continue
		}
		written := v.Kind == image.VMAFileShared && v.Prot&unix.PROT_WRITE != 0
		if err := jd.saveLocal(hostPID, v.File, written); err != nil {
			return fmt.Errorf("pid %d: mapping %#x: %w", p.PID, v.Start, err)
		}
	}
	for _, f := range p.Files {
		if f.Kind != image.FDFile || f.File == nil {
			continue
		}
		if err := jd.saveLocal(hostPID, f.File, f.Writable()); err != nil {
			return fmt.Errorf("pid %d fd %d: %w", p.PID, f.Num, err)
		}
	}
	return nil
}

// saveLocal saves the file id names, as process hostPID sees it, when it
// is node-local and not saved yet.
func (jd *jobDump) saveLocal(hostPID int, id *image.FileID, written bool) error {
	ls := jd.local
	key := localKey{dev: id.Dev, ino: id.Ino}
	if ls.seen[key] {
		return nil
	}
	path := fmt.Sprintf("/proc/%d/root%s", hostPID, id.Path)
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return fmt.Errorf("%s: %w", id.Path, err)
	}
	where := localKind(fs.Type, ls.mountType(hostPID, path), written)
	if where == "" {
		return nil
	}
	ls.seen[key] = true
	var pre unix.Stat_t
	if err := unix.Stat(path, &pre); err != nil {
		return fmt.Errorf("save node-local %s: %w", id.Path, err)
	}
	if pre.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil // a directory the job has open: nothing to save
	}
	// O_NONBLOCK and O_NOFOLLOW: should the path have been replaced by a
	// FIFO or a link since, the open neither waits nor leaves the job's root.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("save node-local %s: %w", id.Path, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("save node-local %s: %w", id.Path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != id.Dev || st.Ino != id.Ino {
		return fmt.Errorf("save node-local %s: the path leads to another file than the job's (renamed meanwhile?)", id.Path)
	}
	if ls.used+st.Size > ls.limit {
		return fmt.Errorf("%s (%d bytes on %s) is node-local, lost if the job resumes on another node, and saving it would take this checkpoint's node-local files past --local-limit (%d bytes): raise the limit, or keep the file on a shared file system",
			id.Path, st.Size, where, ls.limit)
	}
	name := image.LocalFileName(len(jd.opts.Manifest.LocalFiles) + 1)
	d, err := jd.opts.Writer.Create(name)
	if err != nil {
		return err
	}
	n, err := io.Copy(d, io.NewSectionReader(f, 0, st.Size))
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != st.Size {
		err = fmt.Errorf("read %d of %d bytes", n, st.Size)
	}
	if err != nil {
		return fmt.Errorf("save node-local %s: %w", id.Path, err)
	}
	ls.used += st.Size
	saved := *id
	saved.Size, saved.MtimeNs = st.Size, st.Mtim.Nano()
	jd.opts.Manifest.LocalFiles = append(jd.opts.Manifest.LocalFiles, image.LocalFile{
		File: saved, Data: name, Mode: st.Mode & 0o7777, Where: where})
	return nil
}

// restoreLocalFiles creates the saved node-local files that are missing,
// as seen from root ("" for the host, a container's /proc/PID/root), with
// their contents, mode and mtime. A file that is there is left to the
// checks that follow (mapped files, the rollback).
func restoreLocalFiles(gen *image.Generation, root string, log logrus.FieldLogger) error {
	for _, lf := range gen.Manifest.LocalFiles {
		path := root + lf.File.Path
		_, err := os.Lstat(path)
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			return &node.Error{Err: fmt.Errorf("node-local file %s: %w", lf.File.Path, err)}
		}
		if err := createLocalFile(gen, lf, path); err != nil {
			return &node.Error{Err: fmt.Errorf("re-create node-local file %s: %w", lf.File.Path, err)}
		}
		log.Infof("re-created %s (%d bytes, %s) from the checkpoint: the job had it, this node did not", lf.File.Path, lf.File.Size, lf.Where)
	}
	return nil
}

// createLocalFile writes one saved file at path, which does not exist.
func createLocalFile(gen *image.Generation, lf image.LocalFile, path string) error {
	src, err := gen.Open(lf.Data)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, src)
	if err == nil && n != lf.File.Size {
		err = fmt.Errorf("the image holds %d bytes, the file had %d", n, lf.File.Size)
	}
	if err == nil {
		err = f.Chmod(os.FileMode(lf.Mode & 0o777))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	// The mtime is part of what identifies a mapped file.
	mtime := time.Unix(0, lf.File.MtimeNs)
	return os.Chtimes(path, time.Now(), mtime)
}

// mountType is the type of the mount that holds path, as process hostPID
// sees its mounts; "" when the kernel cannot say (statx learnt the mount
// id in 5.8).
func (ls *localSaver) mountType(hostPID int, path string) string {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		return ""
	}
	types, ok := ls.mountTypes[hostPID]
	if !ok {
		types = map[uint64]string{}
		if f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", hostPID)); err == nil {
			infos, _ := mountinfo.GetMountsFromReader(f, nil)
			f.Close()
			for _, mi := range infos {
				types[uint64(mi.ID)] = mi.FSType
			}
		}
		ls.mountTypes[hostPID] = types
	}
	return types[stx.Mnt_id]
}
