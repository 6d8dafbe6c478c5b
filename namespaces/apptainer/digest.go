package apptainer

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// digestKey identifies one version of a file without reading it. A file
// rewritten in place keeps its inode but changes size or mtime; one
// replaced by rename gets a new inode.
type digestKey struct {
	path     string
	dev, ino uint64
	size     int64
	mtime    int64
}

// digestCacheSize is how many image versions a DigestCache remembers; a
// job uses one image, a test or a node running several jobs a few.
const digestCacheSize = 16

// DigestCache remembers the SHA-256 digest of image files per (path,
// device, inode, size, mtime), so that a supervisor checkpointing every few
// minutes hashes a multi-GiB image once and not at every checkpoint. It is
// safe for concurrent use.
type DigestCache struct {
	mu      sync.Mutex
	entries map[digestKey]cacheEntry
	tick    uint64
	// hashed counts the files actually read, for tests.
	hashed int
}

// cacheEntry is one remembered digest and when it was last used.
type cacheEntry struct {
	digest string
	used   uint64
}

// Digests is the cache NewRecord and Verify use.
var Digests = &DigestCache{}

// Image returns the size, mtime and digest of the image file at path,
// hashing it only when this version of the file is not in the cache.
func (c *DigestCache) Image(path string) (image.ContainerImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return image.ContainerImage{}, fmt.Errorf("container image: %w", err)
	}
	defer f.Close()
	key, fi, err := fileKey(path, f)
	if err != nil {
		return image.ContainerImage{}, err
	}
	img := image.ContainerImage{Path: path, Size: fi.Size(), MTime: fi.ModTime().UTC()}
	if d, ok := c.lookup(key); ok {
		img.Digest = d
		return img, nil
	}
	start := time.Now()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return image.ContainerImage{}, fmt.Errorf("hash container image %s: %w", path, err)
	}
	after, _, err := fileKey(path, f)
	if err != nil {
		return image.ContainerImage{}, err
	}
	if after != key {
		return image.ContainerImage{}, fmt.Errorf("hash container image %s: the file changed while it was read", path)
	}
	img.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	logrus.Debugf("hashed container image %s (%d bytes) in %v", path, fi.Size(), time.Since(start).Round(time.Millisecond))
	c.store(key, img.Digest)
	return img, nil
}

// fileKey returns the cache key of the open file f, named path.
func fileKey(path string, f *os.File) (digestKey, os.FileInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return digestKey{}, nil, fmt.Errorf("container image %s: %w", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return digestKey{}, nil, fmt.Errorf("container image %s: no device and inode numbers", path)
	}
	return digestKey{path: path, dev: st.Dev, ino: st.Ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}, fi, nil
}

// lookup returns the remembered digest for key.
func (c *DigestCache) lookup(key digestKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok {
		c.tick++
		e.used = c.tick
		c.entries[key] = e
	}
	return e.digest, ok
}

// store remembers digest for key, forgetting the least recently used entry
// when the cache is full.
func (c *DigestCache) store(key digestKey, digest string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[digestKey]cacheEntry{}
	}
	c.hashed++
	if len(c.entries) >= digestCacheSize {
		var oldest digestKey
		first := true
		for k, e := range c.entries {
			if first || e.used < c.entries[oldest].used {
				oldest, first = k, false
			}
		}
		delete(c.entries, oldest)
	}
	c.tick++
	c.entries[key] = cacheEntry{digest: digest, used: c.tick}
}
