package image

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cespare/xxhash/v2"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Generation is one committed, opened generation. Error messages about it
// start with "generation N:".
type Generation struct {
	Gen      int
	Dir      string
	Manifest *Manifest
}

// Path is the path of the data file name inside the generation.
func (g *Generation) Path(name string) string { return filepath.Join(g.Dir, name) }

// readManifest decodes the manifest, checking the format version before
// anything else so that a newer format is reported as such and not as
// whatever decoding error its changed fields would cause.
func (g *Generation) readManifest() (*Manifest, error) {
	b, err := os.ReadFile(g.Path(ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(g.Dir); derr != nil {
			return nil, fmt.Errorf("generation %d: %w", g.Gen, derr)
		}
		return nil, fmt.Errorf("generation %d: %s is missing: the checkpoint is incomplete", g.Gen, ManifestName)
	}
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", g.Gen, err)
	}
	var head struct {
		FormatVersion int `json:"format_version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("generation %d: %s is not valid JSON: %w", g.Gen, ManifestName, err)
	}
	switch {
	case head.FormatVersion > FormatVersion:
		return nil, fmt.Errorf("generation %d: image format version %d is newer than this ckpt-apptainer supports (%d): restart it with a newer ckpt-apptainer", g.Gen, head.FormatVersion, FormatVersion)
	case head.FormatVersion < 1:
		return nil, fmt.Errorf("generation %d: %s has no valid format version (%d)", g.Gen, ManifestName, head.FormatVersion)
	}
	m := new(Manifest)
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("generation %d: decode %s: %w", g.Gen, ManifestName, err)
	}
	if err := checkManifestSum(m); err != nil {
		return nil, fmt.Errorf("generation %d: %s: %w", g.Gen, ManifestName, err)
	}
	if m.Generation != g.Gen {
		return nil, fmt.Errorf("generation %d: %s says it is generation %d: the directory was renamed or copied", g.Gen, ManifestName, m.Generation)
	}
	if err := checkFileRefs(m); err != nil {
		return nil, fmt.Errorf("generation %d: %s: %w", g.Gen, ManifestName, err)
	}
	if err := checkRefs(m); err != nil {
		return nil, fmt.Errorf("generation %d: %s: %w", g.Gen, ManifestName, err)
	}
	return m, nil
}

// ReadJSON decodes the data file name into v.
func (g *Generation) ReadJSON(name string, v any) error {
	f, err := g.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := json.NewDecoder(bufio.NewReaderSize(f, 1<<16)).Decode(v); err != nil {
		return fmt.Errorf("generation %d: decode %s: %w", g.Gen, name, err)
	}
	return nil
}

// Verify checks every file the manifest lists, and every file of an
// earlier generation it refers to (Refs): that it exists as a regular file
// with the recorded size and xxHash64. Files are checked in parallel,
// largest first; the error reported is the one for the first failing file
// in manifest order, its own files before the referenced ones. Files
// present but not listed are ignored.
func (g *Generation) Verify() error {
	return g.check(true)
}

// checkSizes is Verify without the checksums, cheap enough for a listing.
func (g *Generation) checkSizes() error {
	return g.check(false)
}

// VerifyRestorable is Verify without the checksums of the page files (the
// generation's own and those of earlier generations it reads), whose sizes
// it still checks, and whose recorded sums it still compares with the
// earlier generations' manifests: a restore verifies them as it reads them
// (memory.Restorer.Unverified) and lets nothing of the job run unless they
// match, so a restart reads its page data once.
func (g *Generation) VerifyRestorable() error {
	return g.checkFiles(func(f FileSum, _ bool) bool { return !IsPageFile(f.Name) })
}

// IsPageFile says whether name is a process's page file.
func IsPageFile(name string) bool {
	return strings.HasPrefix(name, "pages-") && strings.HasSuffix(name, ".img")
}

// Sum returns the size and checksum the manifest gives the generation's
// own data file name.
func (g *Generation) Sum(name string) (FileSum, bool) {
	for _, f := range g.Manifest.Files {
		if f.Name == name {
			return f, true
		}
	}
	return FileSum{}, false
}

// VerifyFrom checks data file name of generation from: VerifyFile for
// this generation's own (from 0), else the file of an earlier generation
// that Refs lists, against the size and checksum recorded there.
func (g *Generation) VerifyFrom(from int, name string) error {
	if from == 0 || from == g.Gen {
		return g.VerifyFile(name)
	}
	ref, ok := g.Ref(from, name)
	if !ok {
		return fmt.Errorf("generation %d: %s of generation %d is not in the manifest's refs", g.Gen, name, from)
	}
	if err := g.sibling(from).checkFile(ref.FileSum, true); err != nil {
		return refError(g, ref, err)
	}
	return nil
}

// VerifyFile checks the size and checksum of the generation's own data
// file name.
func (g *Generation) VerifyFile(name string) error {
	sum, ok := g.Sum(name)
	if !ok {
		return fmt.Errorf("generation %d: %s is not in the manifest's file list", g.Gen, name)
	}
	if err := g.checkFile(sum, true); err != nil {
		return fmt.Errorf("generation %d: %s: %w", g.Gen, name, err)
	}
	return nil
}

// fileCheck is one file check runs: in generation in, or failed before
// any reading with err.
type fileCheck struct {
	in   *Generation
	want FileSum
	wrap func(error) error
	err  error
	// ref is set for a file of an earlier generation.
	ref bool
}

func (g *Generation) check(sums bool) error {
	return g.checkFiles(func(FileSum, bool) bool { return sums })
}

// checkFiles checks every file of the generation and every file of an
// earlier one it refers to (ref), their checksums where sum says so.
func (g *Generation) checkFiles(sum func(f FileSum, ref bool) bool) error {
	if err := checkListed(g.Manifest); err != nil {
		return fmt.Errorf("generation %d: %s: %w", g.Gen, ManifestName, err)
	}
	var files []fileCheck
	for _, f := range g.Manifest.Files {
		files = append(files, fileCheck{in: g, want: f, wrap: func(err error) error {
			return fmt.Errorf("generation %d: %s: %w", g.Gen, f.Name, err)
		}})
	}
	for _, t := range g.refTargets() {
		files = append(files, fileCheck{in: t.gen, want: t.ref.FileSum, err: t.err, ref: true, wrap: func(err error) error {
			return refError(g, t.ref, err)
		}})
	}
	if len(files) == 0 {
		return nil
	}
	order := make([]int, len(files))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return files[order[a]].want.Size > files[order[b]].want.Size })

	errs := make([]error, len(files))
	next := make(chan int)
	workers := min(runtime.GOMAXPROCS(0), len(files))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				fc := files[i]
				err := fc.err
				if err == nil {
					err = fc.in.checkFile(fc.want, sum(fc.want, fc.ref))
				}
				if err != nil {
					errs[i] = fc.wrap(err)
				}
			}
		})
	}
	for _, i := range order {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkFile checks one listed file; errors do not repeat its name.
func (g *Generation) checkFile(want FileSum, sums bool) error {
	f, err := os.OpenFile(g.Path(want.Name), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("missing: the checkpoint is incomplete")
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if size := fi.Size(); size != want.Size {
		what := "was modified"
		if size < want.Size {
			what = "is truncated"
		}
		return fmt.Errorf("size is %d bytes, the manifest says %d: the file %s", size, want.Size, what)
	}
	if !sums {
		return nil
	}
	n, sum, err := hashFile(f)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if n != want.Size || hex.EncodeToString(sum) != want.XXH64 {
		return errors.New("checksum mismatch: the file is corrupt or was modified")
	}
	return nil
}

// hashFile returns the length and xxHash64 of f from its current offset.
// One goroutine reads ahead in large chunks while this one hashes, so the
// disk and the hash run at the same time.
func hashFile(f *os.File) (int64, []byte, error) {
	// Only a hint that doubles the kernel's readahead window.
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)

	type chunk struct {
		b   *[]byte
		err error
	}
	const depth = 2
	// At most depth chunks circulate, so sends on free never block.
	free := make(chan *[]byte, depth)
	filled := make(chan chunk, depth)
	for range depth {
		free <- chunkPool.Get().(*[]byte)
	}
	go func() {
		defer close(filled)
		for {
			b := <-free
			n, err := io.ReadFull(f, (*b)[:cap(*b)])
			*b = (*b)[:n]
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				filled <- chunk{b: b}
				return
			}
			filled <- chunk{b: b, err: err}
			if err != nil {
				return
			}
		}
	}()

	h := xxhash.New()
	var total int64
	var err error
	for c := range filled {
		if err == nil {
			err = c.err
		}
		if err == nil {
			h.Write(*c.b)
			total += int64(len(*c.b))
		}
		free <- c.b
	}
	for range depth {
		chunkPool.Put(<-free)
	}
	if err != nil {
		return 0, nil, err
	}
	return total, h.Sum(nil), nil
}
