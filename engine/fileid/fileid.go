package fileid

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// digestKey names a file as it is: a digest is cached until the file
// changes.
type digestKey struct {
	dev, ino uint64
	size     int64
	mtimeNs  int64
}

var (
	// digestMu protects digestCache.
	digestMu    sync.Mutex
	digestCache = map[digestKey][2]string{}
)

// digestCacheMax bounds the cache; it is emptied when full.
const digestCacheMax = 1 << 14

// Of describes a file as it is now, with its digests.
func Of(path string) (*image.FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	id := &image.FileID{Path: path, Size: st.Size, MtimeNs: st.Mtim.Nano(), Dev: st.Dev, Ino: st.Ino}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return id, nil
	}
	key := digestKey{st.Dev, st.Ino, st.Size, st.Mtim.Nano()}
	digestMu.Lock()
	d, ok := digestCache[key]
	digestMu.Unlock()
	if !ok {
		head, tail, err := digests(path, st.Size)
		if err != nil {
			return nil, err
		}
		d = [2]string{head, tail}
		digestMu.Lock()
		if len(digestCache) >= digestCacheMax {
			digestCache = map[digestKey][2]string{}
		}
		digestCache[key] = d
		digestMu.Unlock()
	}
	id.Head, id.Tail = d[0], d[1]
	return id, nil
}

// OfProc describes a file as process hostPID names it: path is looked
// up from the process's root, which for a container's process is the
// container's.
func OfProc(hostPID int, path string) (*image.FileID, error) {
	id, err := Of(fmt.Sprintf("/proc/%d/root%s", hostPID, path))
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, errors.Unwrap(err))
	}
	id.Path = path
	return id, nil
}

// digests hashes the first and the last DigestSpan bytes of the file's
// first size bytes (the tail is empty when the head covers them all).
func digests(path string, size int64) (head, tail string, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		// O_NOATIME is for the file's owner only.
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sum := func(off, n int64) (string, error) {
		h := xxhash.New()
		got, err := io.Copy(h, io.NewSectionReader(f, off, n))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		if got != n {
			return "", fmt.Errorf("read %s: %d bytes at %d, want %d: the file is shorter", path, got, off, n)
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	if head, err = sum(0, min(size, image.DigestSpan)); err != nil {
		return "", "", err
	}
	if size > image.DigestSpan {
		if tail, err = sum(size-image.DigestSpan, image.DigestSpan); err != nil {
			return "", "", err
		}
	}
	return head, tail, nil
}

// Check refuses a file that changed since the checkpoint: mapping a
// different library or binary under a running program corrupts it.
func Check(root string, want *image.FileID) error {
	got, err := Of(root + want.Path)
	if err != nil {
		return fmt.Errorf("%w (the file was there at checkpoint time)", err)
	}
	if got.Size != want.Size || got.MtimeNs != want.MtimeNs {
		return fmt.Errorf("%s changed since the checkpoint (size %d→%d, mtime %d→%d): restore needs the same file", want.Path, want.Size, got.Size, want.MtimeNs, got.MtimeNs)
	}
	if want.Head != "" && (got.Head != want.Head || got.Tail != want.Tail) {
		return fmt.Errorf("%s has the size and mtime it had at checkpoint time, but other contents: restore needs the same file", want.Path)
	}
	return nil
}

// CheckSize refuses a file whose size changed since the checkpoint:
// a shared mapping of a file the job writes may not reach past its end.
func CheckSize(root string, want *image.FileID) error {
	var st unix.Stat_t
	if err := unix.Stat(root+want.Path, &st); err != nil {
		return fmt.Errorf("stat %s: %w (the file was there at checkpoint time)", want.Path, err)
	}
	if st.Size != want.Size {
		return fmt.Errorf("%s changed size since the checkpoint (%d→%d bytes): restore needs the same file", want.Path, want.Size, st.Size)
	}
	return nil
}

// SameWritten reports whether the file at path (stat st) is the one
// the job was writing, recorded as want, up to want.Size: the same device
// and inode (the node that took the checkpoint), else the same first and
// last bytes (another node; a file that grew keeps them).
func SameWritten(path string, st *unix.Stat_t, want *image.FileID) (bool, error) {
	if st.Dev == want.Dev && st.Ino == want.Ino {
		return true, nil
	}
	if want.Head == "" {
		// An image from before digests: only the size was ever compared.
		return true, nil
	}
	if st.Size < want.Size {
		return false, nil
	}
	head, tail, err := digests(path, want.Size)
	if err != nil {
		return false, err
	}
	return head == want.Head && tail == want.Tail, nil
}
