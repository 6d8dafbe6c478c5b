package image

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cespare/xxhash/v2"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ioChunk is the unit of file I/O in the store. Large sequential writes and
// reads keep the disk streaming and make per-call overhead negligible.
const ioChunk = 4 << 20

// writeDepth is how many chunks a DataFile may have in flight: one being
// filled by the caller while the others are written, so hashing and the
// caller's own work overlap with the disk.
const writeDepth = 4

// chunkPool recycles ioChunk buffers between files and generations.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, ioChunk); return &b }}

// Writer builds one generation in a temporary directory. Create and
// WriteJSON may be called from several goroutines; each DataFile belongs to
// one goroutine.
type Writer struct {
	Gen int
	// Dir is the temporary directory the generation is written in.
	Dir string

	store *Store

	mu        sync.Mutex // protects below
	files     map[string]*DataFile
	committed bool
	aborted   bool
}

// Begin starts generation highest+1, counting committed, temporary and
// trashed generations alike so that a number is never reused, even for a
// generation that crashed half-written. Hold Lock while writing.
func (s *Store) Begin() (*Writer, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("begin checkpoint: %w", err)
	}
	highest := 0
	for _, e := range entries {
		name := strings.TrimPrefix(e.Name(), trashPrefix)
		for _, prefix := range []string{genPrefix, tmpGenPrefix} {
			if n, ok := parseGen(name, prefix); ok && n > highest {
				highest = n
			}
		}
	}
	// Another writer that ignored the lock could take the same number;
	// Mkdir fails then and the next number is tried.
	for gen := highest + 1; gen < highest+100; gen++ {
		dir := filepath.Join(s.Dir, fmt.Sprintf("%s%06d", tmpGenPrefix, gen))
		err := os.Mkdir(dir, dirMode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("begin checkpoint generation %d: %w", gen, err)
		}
		// The umask may have taken bits away that the owner needs.
		if err := os.Chmod(dir, dirMode); err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("begin checkpoint generation %d: %w", gen, err)
		}
		logrus.Debugf("writing checkpoint generation %d in %s", gen, dir)
		return &Writer{Gen: gen, Dir: dir, store: s, files: map[string]*DataFile{}}, nil
	}
	return nil, fmt.Errorf("begin checkpoint in %s: no free generation number after %d", s.Path, highest)
}

// checkName refuses names that would escape the generation directory or
// collide with the store's own files.
func checkName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("invalid image file name %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("invalid image file name %q: must not contain a slash", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("invalid image file name %q: must not start with a dot", name)
	case name == ManifestName:
		return fmt.Errorf("invalid image file name %q: reserved for the manifest", name)
	case len(name) > 255:
		return fmt.Errorf("invalid image file name %q: too long", name)
	}
	return nil
}

// Create adds a data file to the generation. The file is recorded in the
// manifest with its size and xxHash64 when it is closed.
func (w *Writer) Create(name string) (*DataFile, error) {
	return w.create(name, false)
}

// CreateDirect is Create for large page-aligned data written with
// WriteThrough: the file is opened with O_DIRECT where the file system
// allows it, so page data goes from the caller's buffers to the disk
// without a copy into the page cache (about twice the throughput of
// buffered writes plus fsync on the machines we measured).
func (w *Writer) CreateDirect(name string) (*DataFile, error) {
	return w.create(name, true)
}

func (w *Writer) create(name string, direct bool) (*DataFile, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("generation %d: %w", w.Gen, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed || w.aborted {
		return nil, fmt.Errorf("generation %d: create %s: the generation is already finished", w.Gen, name)
	}
	if _, dup := w.files[name]; dup {
		return nil, fmt.Errorf("generation %d: create %s: the file was already created", w.Gen, name)
	}
	path := filepath.Join(w.Dir, name)
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL | unix.O_CLOEXEC
	f, err := os.OpenFile(path, flags, fileMode)
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", w.Gen, err)
	}
	if direct {
		// Some file systems (tmpfs, some FUSE mounts) refuse O_DIRECT;
		// they get buffered writes.
		fl, ferr := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
		if ferr == nil {
			_, ferr = unix.FcntlInt(f.Fd(), unix.F_SETFL, fl|unix.O_DIRECT)
		}
		direct = ferr == nil
	}
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		return nil, fmt.Errorf("generation %d: %w", w.Gen, err)
	}
	d := &DataFile{name: name, gen: w.Gen, f: f, h: xxhash.New(), direct: direct}
	w.files[name] = d
	return d, nil
}

// Drop removes data file d from the generation: it is closed, deleted and
// not listed in the manifest.
func (w *Writer) Drop(d *DataFile) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.files[d.name] != d {
		return
	}
	delete(w.files, d.name)
	d.discard()
	if err := os.Remove(filepath.Join(w.Dir, d.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		logrus.Debugf("generation %d: drop %s: %v", w.Gen, d.name, err)
	}
}

// WriteJSON adds a data file holding v as indented JSON.
func (w *Writer) WriteJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("generation %d: encode %s: %w", w.Gen, name, err)
	}
	d, err := w.Create(name)
	if err != nil {
		return err
	}
	_, err = d.Write(append(b, '\n'))
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Commit makes the generation durable and current: it fills m.Files (sorted
// by name), m.Generation and m.FormatVersion (and m.Created when unset),
// writes and fsyncs the manifest, fsyncs the directory, renames it into
// place, fsyncs the checkpoint directory and finally points latest at it.
// Every data file must have been closed.
func (w *Writer) Commit(m *Manifest) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed || w.aborted {
		return fmt.Errorf("commit generation %d: the generation is already finished", w.Gen)
	}
	sums := make([]FileSum, 0, len(w.files))
	for name, d := range w.files {
		if d.sum == nil {
			return fmt.Errorf("commit generation %d: %s was not closed successfully", w.Gen, name)
		}
		sums = append(sums, *d.sum)
	}
	sort.Slice(sums, func(i, j int) bool { return sums[i].Name < sums[j].Name })
	for _, sum := range sums {
		if err := syncFile(filepath.Join(w.Dir, sum.Name)); err != nil {
			return fmt.Errorf("commit generation %d: %w", w.Gen, err)
		}
	}
	m.Files = sums
	m.Stats.Bytes = 0
	for _, sum := range sums {
		m.Stats.Bytes += sum.Size
	}
	m.Generation = w.Gen
	m.FormatVersion = FormatVersion
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	sum, err := manifestSum(m)
	if err != nil {
		return fmt.Errorf("commit generation %d: %w", w.Gen, err)
	}
	m.ManifestSHA256 = sum
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("commit generation %d: encode manifest: %w", w.Gen, err)
	}
	if err := writeFileSync(filepath.Join(w.Dir, ManifestName), append(b, '\n')); err != nil {
		return fmt.Errorf("commit generation %d: %w", w.Gen, err)
	}
	if err := syncDir(w.Dir); err != nil {
		return fmt.Errorf("commit generation %d: %w", w.Gen, err)
	}
	final := filepath.Join(w.store.Dir, GenName(w.Gen))
	if err := os.Rename(w.Dir, final); err != nil {
		return fmt.Errorf("commit generation %d: %w", w.Gen, err)
	}
	// From here on the generation exists under its final name; Abort must
	// leave it alone even if updating latest fails.
	w.committed = true
	if err := syncDir(w.store.Dir); err != nil {
		return fmt.Errorf("commit generation %d: %w", w.Gen, err)
	}
	if err := w.store.replaceLatest(w.Gen); err != nil {
		return fmt.Errorf("commit generation %d: %w", w.Gen, err)
	}
	logrus.Debugf("committed checkpoint generation %d (%d files)", w.Gen, len(sums))
	return nil
}

// syncFile makes one written data file durable.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Abort discards an uncommitted generation: open data files are closed and
// the temporary directory removed. It does nothing after Commit, so it can
// be deferred right after Begin. No goroutine may still be writing one of
// the generation's files.
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed || w.aborted {
		return
	}
	w.aborted = true
	for _, d := range w.files {
		d.discard()
	}
	if err := os.RemoveAll(w.Dir); err != nil {
		logrus.Warnf("discard unfinished checkpoint generation %d: %v", w.Gen, err)
	}
}

// writeFileSync creates path with mode 0600, writes b and fsyncs it.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, fileMode)
	if err != nil {
		return err
	}
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

// DataFile is one data file being written. Writes are hashed and counted as
// they come, gathered into large chunks and written by a background
// goroutine, so the caller's next read of process memory overlaps with the
// disk. Close flushes and records the file's FileSum; Commit fsyncs.
type DataFile struct {
	name string
	gen  int
	f    *os.File
	h    hash.Hash
	n    int64

	buf *[]byte // chunk being filled

	// The flusher goroutine, started with the first full chunk.
	started  bool
	full     chan *[]byte          // chunks to hash, in order
	hashed   chan *[]byte          // chunks to write, in order
	free     chan *[]byte          // written chunks, for reuse
	done     chan struct{}         // closed when the flusher has returned
	flushErr atomic.Pointer[error] // the flusher's first write error
	inUse    int                   // chunks taken from the pool

	// direct is set while the file is open with O_DIRECT; WriteThrough
	// drops it for the rest of the file at the first unaligned write.
	direct bool

	err    error // sticky: the first error ends the file
	closed bool
	sum    *FileSum // set by a successful Close
	// codec and dataSize are SetEncoding's, for the manifest.
	codec    string
	dataSize int64
}

// SetEncoding records that the file's content is dataSize bytes of data
// encoded with codec (image.CodecZstd), for the manifest's file list.
func (d *DataFile) SetEncoding(codec string, dataSize int64) {
	d.codec, d.dataSize = codec, dataSize
}

// Name is the file's name inside the generation.
func (d *DataFile) Name() string { return d.name }

// Written is how many bytes the file has taken so far.
func (d *DataFile) Written() int64 { return d.n }

// Write hashes p and queues it for writing. It never keeps p.
func (d *DataFile) Write(p []byte) (int, error) {
	if d.closed {
		return 0, fmt.Errorf("generation %d: write %s: file already closed", d.gen, d.name)
	}
	if d.err != nil {
		return 0, d.err
	}
	written := 0
	for len(p) > 0 {
		if d.buf == nil {
			d.buf = d.takeChunk()
		}
		b := *d.buf
		k := copy(b[len(b):cap(b)], p)
		*d.buf = b[:len(b)+k]
		p = p[k:]
		written += k
		if len(*d.buf) == cap(*d.buf) {
			d.queue()
			if d.err != nil {
				return written, d.err
			}
		}
	}
	d.n += int64(written)
	return written, nil
}

// WriteThrough hashes p and writes it to the file at once, from the
// caller's goroutine, without copying it. It suits callers that already run
// their own writer goroutine over large buffers (page data); it must not be
// mixed with Write on the same file.
func (d *DataFile) WriteThrough(p []byte) (int, error) {
	if d.closed {
		return 0, fmt.Errorf("generation %d: write %s: file already closed", d.gen, d.name)
	}
	if d.err != nil {
		return 0, d.err
	}
	if d.started || d.buf != nil {
		return 0, fmt.Errorf("generation %d: write %s: WriteThrough after Write", d.gen, d.name)
	}
	if d.direct && (len(p)%directAlign != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign != 0) {
		fl, err := unix.FcntlInt(d.f.Fd(), unix.F_GETFL, 0)
		if err == nil {
			_, err = unix.FcntlInt(d.f.Fd(), unix.F_SETFL, fl&^unix.O_DIRECT)
		}
		if err != nil {
			d.err = fmt.Errorf("generation %d: write %s: leave O_DIRECT: %w", d.gen, d.name, err)
			return 0, d.err
		}
		d.direct = false
	}
	d.h.Write(p)
	n, err := d.f.Write(p)
	d.n += int64(n)
	if err != nil {
		d.err = fmt.Errorf("generation %d: write %s: %w", d.gen, d.name, err)
		return n, d.err
	}
	return n, nil
}

// directAlign is the alignment O_DIRECT needs of buffers, lengths and file
// offsets; a page satisfies every block device.
const directAlign = 4096

// takeChunk returns an empty chunk: a new one while fewer than writeDepth
// are in flight, else the next one the flusher has finished with.
func (d *DataFile) takeChunk() *[]byte {
	if d.inUse < writeDepth {
		d.inUse++
		b := chunkPool.Get().(*[]byte)
		*b = (*b)[:0]
		return b
	}
	b := <-d.free
	*b = (*b)[:0]
	return b
}

// queue hands the current chunk to the flusher and picks up a write error
// it has already met, so a failing disk stops the dump early.
func (d *DataFile) queue() {
	if !d.started {
		d.started = true
		d.full = make(chan *[]byte, writeDepth)
		d.hashed = make(chan *[]byte, writeDepth)
		d.free = make(chan *[]byte, writeDepth)
		d.done = make(chan struct{})
		go d.hasher()
		go d.flusher()
	}
	d.full <- d.buf
	d.buf = nil
	if e := d.flushErr.Load(); e != nil {
		d.err = *e
	}
}

// hasher hashes chunks in order and passes them on to the flusher. It is a
// stage of its own so that hashing, the caller's reads of process memory
// and the disk writes all overlap.
func (d *DataFile) hasher() {
	defer close(d.hashed)
	for b := range d.full {
		d.h.Write(*b)
		d.hashed <- b
	}
}

// flusher writes chunks in order until full is closed. After a write error
// it only recycles chunks, so the caller never blocks.
func (d *DataFile) flusher() {
	defer close(d.done)
	var off int64
	for b := range d.hashed {
		if d.flushErr.Load() == nil {
			n, err := d.f.Write(*b)
			if err != nil {
				err = fmt.Errorf("generation %d: write %s: %w", d.gen, d.name, err)
				d.flushErr.Store(&err)
			} else {
				off += int64(n)
			}
		}
		d.free <- b
	}
}

// finish stops the flusher, returns the chunks to the pool and reports the
// first write error.
func (d *DataFile) finish() error {
	if d.buf != nil {
		chunkPool.Put(d.buf)
		d.buf = nil
	}
	if !d.started {
		return nil
	}
	close(d.full)
	<-d.done
	for {
		select {
		case b := <-d.free:
			chunkPool.Put(b)
		default:
			if e := d.flushErr.Load(); e != nil {
				return *e
			}
			return nil
		}
	}
}

// Close writes what is left and closes the file, and records its
// size and xxHash64 for the manifest.
func (d *DataFile) Close() error {
	if d.closed {
		if d.sum == nil {
			return fmt.Errorf("generation %d: close %s: file already closed after an error", d.gen, d.name)
		}
		return nil
	}
	if d.err == nil && d.buf != nil && len(*d.buf) > 0 {
		d.queue()
	}
	err := d.finish()
	if err == nil {
		err = d.err
	}
	d.closed = true
	// No fsync here: Close ends the part of a checkpoint during which the
	// job is stopped, and Commit makes every file durable afterwards.
	if cerr := d.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("generation %d: close %s: %w", d.gen, d.name, cerr)
	}
	if err != nil {
		d.err = err
		return err
	}
	d.sum = &FileSum{Name: d.name, Size: d.n, XXH64: hex.EncodeToString(d.h.Sum(nil)), Codec: d.codec, DataSize: d.dataSize}
	return nil
}

// discard closes a file that will not be committed.
func (d *DataFile) discard() {
	if d.closed {
		return
	}
	d.closed = true
	_ = d.finish()
	d.f.Close()
}
