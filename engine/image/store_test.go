package image

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// testFiles is the content of one small generation.
type testFiles map[string][]byte

// commitGen writes and commits one generation holding files and a core file.
func commitGen(t testing.TB, s *Store, files testFiles) int {
	t.Helper()
	w, err := s.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for name, b := range files {
		d, err := w.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	core := &Process{PID: 1, Comm: "app"}
	if err := w.WriteJSON(CoreName(1), core); err != nil {
		t.Fatal(err)
	}
	pages := ""
	for name := range files {
		if strings.HasPrefix(name, "pages-") {
			pages = name
		}
	}
	m := &Manifest{Processes: []ProcessRef{{PID: 1, Comm: "app", Core: CoreName(1), Pages: pages}}}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	return w.Gen
}

func newStore(t testing.TB) *Store {
	t.Helper()
	dir := t.TempDir()
	// Whatever the umask: a checkpoint directory below one others can
	// write is refused.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(filepath.Join(dir, "ckpt"), true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sumHex(b []byte) string {
	h := xxhash.New()
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func TestCommitAndReadBack(t *testing.T) {
	s := newStore(t)
	gens := []testFiles{
		{PagesName(1): bytes.Repeat([]byte{1}, 3*PageSize), "extra.bin": []byte("x")},
		{PagesName(1): bytes.Repeat([]byte{2}, 5*PageSize)},
	}
	for i, files := range gens {
		if got := commitGen(t, s, files); got != i+1 {
			t.Fatalf("generation %d committed as %d", i+1, got)
		}
	}
	if got, err := s.Generations(); err != nil || !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("Generations = %v, %v; want [1 2]", got, err)
	}
	if l, err := s.Latest(); err != nil || l != 2 {
		t.Fatalf("Latest = %d, %v; want 2", l, err)
	}
	if target, _ := os.Readlink(filepath.Join(s.Dir, LatestName)); target != "gen-000002" {
		t.Fatalf("latest -> %q, want gen-000002", target)
	}
	for i, files := range gens {
		g, err := s.Open(i + 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Verify(); err != nil {
			t.Fatal(err)
		}
		m := g.Manifest
		if m.Generation != i+1 || m.FormatVersion != FormatVersion || m.Created.IsZero() {
			t.Errorf("manifest header = gen %d format %d created %v", m.Generation, m.FormatVersion, m.Created)
		}
		var names []string
		for _, f := range m.Files {
			names = append(names, f.Name)
			want, ok := files[f.Name]
			if f.Name == CoreName(1) {
				continue
			}
			if !ok {
				t.Errorf("generation %d lists unexpected %s", i+1, f.Name)
				continue
			}
			if f.Size != int64(len(want)) || f.XXH64 != sumHex(want) {
				t.Errorf("generation %d: %s recorded as %d/%s", i+1, f.Name, f.Size, f.XXH64)
			}
			got, err := os.ReadFile(g.Path(f.Name))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("generation %d: %s content differs (%v)", i+1, f.Name, err)
			}
		}
		if !slices.IsSorted(names) || len(names) != len(files)+1 {
			t.Errorf("generation %d: Files = %v, want %d sorted names", i+1, names, len(files)+1)
		}
		var p Process
		if err := g.ReadJSON(CoreName(1), &p); err != nil || p.Comm != "app" {
			t.Errorf("ReadJSON = %+v, %v", p, err)
		}
	}
}

// TestDataFileChunking writes through every path of the chunk pipeline:
// tiny writes, writes spanning chunks and writes larger than a chunk.
func TestDataFileChunking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*ioChunk+12345)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	tests := []struct {
		name  string
		sizes func() int
	}{
		{"one byte then large", func() int { return 1 + rng.IntN(2*ioChunk) }},
		{"page sized", func() int { return PageSize }},
		{"odd small", func() int { return 1 + rng.IntN(9000) }},
		{"whole", func() int { return len(data) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			w, err := s.Begin()
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			d, err := w.Create("pages-1.img")
			if err != nil {
				t.Fatal(err)
			}
			for rest := data; len(rest) > 0; {
				n := min(tt.sizes(), len(rest))
				if k, err := d.Write(rest[:n]); err != nil || k != n {
					t.Fatalf("Write = %d, %v; want %d", k, err, n)
				}
				rest = rest[n:]
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(&Manifest{}); err != nil {
				t.Fatal(err)
			}
			g, err := s.Open(w.Gen)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(g.Path("pages-1.img"))
			if !bytes.Equal(got, data) {
				t.Fatalf("file holds %d bytes that differ from the %d written", len(got), len(data))
			}
			if f := g.Manifest.Files[0]; f.Size != int64(len(data)) || f.XXH64 != sumHex(data) {
				t.Fatalf("recorded %d/%s", f.Size, f.XXH64)
			}
			if err := g.Verify(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDamagedGeneration(t *testing.T) {
	pages := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr string
	}{
		{"flipped byte", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "pages-2.img")
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0x40
			must(t, os.WriteFile(p, b, 0o600))
		}, "generation 2: pages-2.img: checksum mismatch: the file is corrupt or was modified"},
		{"truncated", func(t *testing.T, dir string) {
			must(t, os.Truncate(filepath.Join(dir, "pages-2.img"), 4096))
		}, "generation 2: pages-2.img: size is 4096 bytes, the manifest says 1048576: the file is truncated"},
		{"grown", func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "pages-2.img"), os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			_, err = f.Write([]byte("more"))
			must(t, err)
			must(t, f.Close())
		}, "the file was modified"},
		{"missing data file", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "pages-2.img")))
		}, "generation 2: pages-2.img: missing"},
		{"data file replaced by symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "pages-2.img")
			must(t, os.Rename(p, p+".real"))
			must(t, os.Symlink("pages-2.img.real", p))
		}, "generation 2: pages-2.img:"},
		{"missing manifest", func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, ManifestName)))
		}, "generation 2: manifest.json is missing"},
		{"garbled manifest", func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, ManifestName), []byte("{\"format_"), 0o600))
		}, "generation 2: manifest.json is not valid JSON"},
		{"newer format", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["format_version"] = FormatVersion + 1 })
		}, fmt.Sprintf("generation 2: image format version %d is newer than this ckpt-apptainer supports (%d)", FormatVersion+1, FormatVersion)},
		{"manifest changed", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["processes"].([]any)[0].(map[string]any)["comm"] = "other" })
		}, "manifest_sha256 does not match"},
		{"manifest checksum removed", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { delete(m, "manifest_sha256") })
		}, "no manifest_sha256"},
		{"path escaping the generation", func(t *testing.T, dir string) {
			resealManifest(t, dir, func(m *Manifest) { m.Files[0].Name = "../gen-000001/pages-1.img" })
		}, "must not contain a slash"},
		{"core outside the generation", func(t *testing.T, dir string) {
			resealManifest(t, dir, func(m *Manifest) { m.Processes[0].Core = "../../evil-core.json" })
		}, "processes[0].core: invalid image file name"},
		{"core not in the file list", func(t *testing.T, dir string) {
			resealManifest(t, dir, func(m *Manifest) { m.Processes[0].Core = "core-9.json" })
		}, "processes[0].core names core-9.json, which the file list does not have"},
		{"pages not in the file list", func(t *testing.T, dir string) {
			resealManifest(t, dir, func(m *Manifest) { m.Processes[0].Pages = "pages-1.img" })
		}, "processes[0].pages names pages-1.img"},
		{"pid twice", func(t *testing.T, dir string) {
			resealManifest(t, dir, func(m *Manifest) { m.Processes = append(m.Processes, m.Processes[0]) })
		}, "pid 1 appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			commitGen(t, s, testFiles{"pages-1.img": pages})
			commitGen(t, s, testFiles{"pages-2.img": pages})
			dir := filepath.Join(s.Dir, GenName(2))
			tt.damage(t, dir)

			g, err := s.Open(2)
			if err == nil {
				err = g.Verify()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open+Verify error = %v, want it to contain %q", err, tt.wantErr)
			}

			log, hook := logtest.NewNullLogger()
			good, err := s.NewestGood(log)
			if err != nil {
				t.Fatal(err)
			}
			if good.Gen != 1 {
				t.Fatalf("NewestGood = generation %d, want 1", good.Gen)
			}
			entries := hook.AllEntries()
			if len(entries) != 1 || entries[0].Level != logrus.WarnLevel ||
				!strings.HasPrefix(entries[0].Message, "generation 2 is unusable: ") ||
				!strings.HasSuffix(entries[0].Message, "; using generation 1") {
				t.Fatalf("log entries = %v, want one warning about generation 2", entries)
			}

			infos, err := s.List(true)
			if err != nil {
				t.Fatal(err)
			}
			if len(infos) != 2 || !infos[0].Valid || infos[1].Valid || !strings.Contains(infos[1].Error, tt.wantErr) {
				t.Fatalf("List(true) = %+v", infos)
			}
		})
	}
}

func TestNewestGoodNoneLeft(t *testing.T) {
	s := newStore(t)
	if _, err := s.NewestGood(nil); err == nil || !strings.Contains(err.Error(), "no checkpoint in") {
		t.Fatalf("empty store: err = %v", err)
	}
	commitGen(t, s, testFiles{"pages-1.img": []byte("abc")})
	must(t, os.Remove(filepath.Join(s.Dir, GenName(1), ManifestName)))
	log, _ := logtest.NewNullLogger()
	if _, err := s.NewestGood(log); err == nil || !strings.Contains(err.Error(), "no usable checkpoint") {
		t.Fatalf("damaged store: err = %v", err)
	}
}

func TestListWithoutVerify(t *testing.T) {
	s := newStore(t)
	commitGen(t, s, testFiles{"pages-1.img": []byte("abcdef")})
	commitGen(t, s, testFiles{"pages-1.img": []byte("abcdef")})
	p := filepath.Join(s.Dir, GenName(2), "pages-1.img")
	must(t, os.WriteFile(p, []byte("abcdeX"), 0o600))

	quick, err := s.List(false)
	must(t, err)
	if len(quick) != 2 || !quick[1].Valid || !quick[1].Latest || quick[0].Latest || quick[1].Processes != 1 || quick[1].SizeBytes < 6 {
		t.Fatalf("List(false) = %+v", quick)
	}
	full, err := s.List(true)
	must(t, err)
	if full[1].Valid || !strings.Contains(full[1].Error, "checksum mismatch") {
		t.Fatalf("List(true) = %+v", full)
	}
}

func TestUncommittedGenerationIgnored(t *testing.T) {
	s := newStore(t)
	commitGen(t, s, testFiles{"pages-1.img": []byte("one")})

	// A writer that dies before Commit leaves its temporary directory.
	w, err := s.Begin()
	must(t, err)
	d, err := w.Create("pages-1.img")
	must(t, err)
	_, err = d.Write([]byte("half"))
	must(t, err)
	must(t, d.Close())
	if filepath.Base(w.Dir) != ".tmp-gen-000002" {
		t.Fatalf("temporary directory = %s", w.Dir)
	}

	if got, _ := s.Generations(); !slices.Equal(got, []int{1}) {
		t.Fatalf("Generations = %v, want [1]", got)
	}
	if g, err := s.NewestGood(nil); err != nil || g.Gen != 1 {
		t.Fatalf("NewestGood = %v, %v", g, err)
	}
	// The number of a crashed generation is not reused.
	w3, err := s.Begin()
	must(t, err)
	if w3.Gen != 3 {
		t.Fatalf("next generation = %d, want 3", w3.Gen)
	}
	w3.Abort()
	if _, err := os.Stat(w3.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Abort left %s: %v", w3.Dir, err)
	}

	must(t, os.Mkdir(filepath.Join(s.Dir, ".trash-gen-000001"), 0o700))
	must(t, s.CleanStale())
	entries, _ := os.ReadDir(s.Dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"gen-000001", "latest"}) {
		t.Fatalf("after CleanStale the directory holds %v", names)
	}
}

func TestAbortAfterCommitKeepsGeneration(t *testing.T) {
	s := newStore(t)
	w, err := s.Begin()
	must(t, err)
	must(t, w.WriteJSON("a.json", map[string]int{"a": 1}))
	must(t, w.Commit(&Manifest{}))
	w.Abort()
	if _, err := s.Open(1); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&Manifest{}); err == nil {
		t.Fatal("second Commit succeeded")
	}
}

func TestCommitRefusesOpenFile(t *testing.T) {
	s := newStore(t)
	w, err := s.Begin()
	must(t, err)
	defer w.Abort()
	if _, err := w.Create("pages-1.img"); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&Manifest{}); err == nil || !strings.Contains(err.Error(), "pages-1.img was not closed") {
		t.Fatalf("Commit with an open file: %v", err)
	}
	if _, err := w.Create("pages-1.img"); err == nil {
		t.Fatal("Create of a duplicate name succeeded")
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"pages-1.img", true},
		{"core-12.json", true},
		{"", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"a/b", false},
		{".hidden", false},
		{ManifestName, false},
		{strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		if err := checkName(tt.name); (err == nil) != tt.ok {
			t.Errorf("checkName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name   string
		keep   int
		latest int // 0: leave latest at the newest
		want   []int
	}{
		{"keep two", 2, 0, []int{4, 5}},
		{"keep all", 0, 0, []int{1, 2, 3, 4, 5}},
		{"keep more than there are", 9, 0, []int{1, 2, 3, 4, 5}},
		{"never the latest", 2, 1, []int{1, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			for range 5 {
				commitGen(t, s, testFiles{"pages-1.img": []byte("p")})
			}
			if tt.latest != 0 {
				must(t, s.replaceLatest(tt.latest))
			}
			must(t, s.Prune(tt.keep))
			got, err := s.Generations()
			must(t, err)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("after Prune(%d): %v, want %v", tt.keep, got, tt.want)
			}
			entries, _ := os.ReadDir(s.Dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".") {
					t.Errorf("Prune left %s", e.Name())
				}
			}
		})
	}
}

func TestLockExcludesSecondHolder(t *testing.T) {
	s := newStore(t)
	unlock, err := s.Lock()
	must(t, err)
	// flock belongs to the open file description, so a second open in the
	// same process competes like another job would.
	other := &Store{Dir: s.Dir, Path: s.Path}
	_, err = other.Lock()
	want := "checkpoint directory " + s.Dir + " is in use by another running job"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second Lock: %v, want %q", err, want)
	}
	if !strings.Contains(err.Error(), "pid ") {
		t.Errorf("second Lock error does not name the holder: %v", err)
	}
	unlock()
	unlock()
	unlock2, err := other.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}

func TestPermissions(t *testing.T) {
	// A permissive umask must not leak into the image.
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	s := newStore(t)
	unlock, err := s.Lock()
	must(t, err)
	defer unlock()
	commitGen(t, s, testFiles{"pages-1.img": []byte("secret")})
	w, err := s.Begin() // an uncommitted generation too
	must(t, err)
	defer w.Abort()
	must(t, w.WriteJSON("core-1.json", 1))

	err = filepath.WalkDir(s.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
		case fi.IsDir() && fi.Mode().Perm() != 0o700:
			t.Errorf("%s: mode %04o, want 0700", path, fi.Mode().Perm())
		case !fi.IsDir() && fi.Mode().Perm() != 0o600:
			t.Errorf("%s: mode %04o, want 0600", path, fi.Mode().Perm())
		}
		return nil
	})
	must(t, err)
}

func TestOpenStore(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		create  bool
		wantErr string
	}{
		{"create new", func(t *testing.T, dir string) {}, true, ""},
		{"missing without create", func(t *testing.T, dir string) {}, false, "does not exist"},
		{"too open is restricted", func(t *testing.T, dir string) {
			must(t, os.Mkdir(dir, 0o755))
			must(t, os.Chmod(dir, 0o755))
		}, false, ""},
		{"a file", func(t *testing.T, dir string) {
			must(t, os.WriteFile(dir, nil, 0o600))
		}, true, "not a directory"},
		{"world-writable holding another user's entry", func(t *testing.T, dir string) {
			must(t, os.Mkdir(dir, 0o700))
			must(t, os.Chmod(dir, 0o777))
			must(t, os.Symlink("/elsewhere", filepath.Join(dir, "latest")))
			if err := os.Lchown(filepath.Join(dir, "latest"), os.Geteuid()+12345, -1); err != nil {
				t.Skipf("cannot give the entry away: %v", err)
			}
		}, false, "its entry latest belongs to uid"},
		{"world-writable holding only own entries is restricted", func(t *testing.T, dir string) {
			must(t, os.Mkdir(dir, 0o700))
			must(t, os.Chmod(dir, 0o777))
			must(t, os.WriteFile(filepath.Join(dir, ".lock"), nil, 0o600))
		}, false, ""},
		{"another owner", func(t *testing.T, dir string) {
			must(t, os.Mkdir(dir, 0o700))
			if err := os.Chown(dir, os.Geteuid()+12345, -1); err != nil {
				t.Skipf("cannot give the directory away: %v", err)
			}
		}, true, "belongs to uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ckpt")
			tt.prepare(t, dir)
			s, err := OpenStore(dir, tt.create)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("OpenStore error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			must(t, err)
			fi, err := os.Stat(s.Dir)
			must(t, err)
			if fi.Mode().Perm() != 0o700 {
				t.Fatalf("mode %04o, want 0700", fi.Mode().Perm())
			}
		})
	}
}

// editManifest rewrites the manifest of a generation directory through a
// generic map, as a newer or hostile writer could.
func editManifest(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, ManifestName)
	b, err := os.ReadFile(p)
	must(t, err)
	var m map[string]any
	must(t, json.Unmarshal(b, &m))
	edit(m)
	b, err = json.Marshal(m)
	must(t, err)
	must(t, os.WriteFile(p, b, 0o600))
}

// resealManifest changes the manifest and writes it with a valid checksum,
// as a hand-made image would be.
func resealManifest(t *testing.T, dir string, edit func(*Manifest)) {
	t.Helper()
	p := filepath.Join(dir, ManifestName)
	b, err := os.ReadFile(p)
	must(t, err)
	var m Manifest
	must(t, json.Unmarshal(b, &m))
	edit(&m)
	m.ManifestSHA256, err = manifestSum(&m)
	must(t, err)
	b, err = json.Marshal(&m)
	must(t, err)
	must(t, os.WriteFile(p, b, 0o600))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestVersion1ManifestWithoutChecksum reads a manifest of the first format,
// which carried no checksum of its own.
func TestVersion1ManifestWithoutChecksum(t *testing.T) {
	s := newStore(t)
	commitGen(t, s, testFiles{"pages-1.img": []byte("data")})
	editManifest(t, filepath.Join(s.Dir, GenName(1)), func(m map[string]any) {
		m["format_version"] = 1
		delete(m, "manifest_sha256")
	})
	g, err := s.Open(1)
	if err != nil {
		t.Fatalf("version 1 manifest refused: %v", err)
	}
	if err := g.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestGenerationOpen(t *testing.T) {
	s := newStore(t)
	commitGen(t, s, testFiles{"pages-1.img": []byte("data")})
	g, err := s.Open(1)
	must(t, err)
	f, err := g.Open("pages-1.img")
	must(t, err)
	f.Close()
	must(t, os.WriteFile(g.Path("extra.img"), []byte("x"), 0o600))
	must(t, os.Symlink("pages-1.img", g.Path("link.img")))
	for name, want := range map[string]string{
		"extra.img":   "not in the manifest's file list",
		"../latest":   "must not contain a slash",
		".hidden.img": "must not start with a dot",
	} {
		if _, err := g.Open(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q) = %v, want %q", name, err, want)
		}
	}
	g.Manifest.Files = append(g.Manifest.Files, FileSum{Name: "link.img"})
	if _, err := g.Open("link.img"); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("Open of a symbolic link = %v, want ELOOP", err)
	}
}

// TestOpenStoreRefusesWhatOthersCanChange: a checkpoint directory below one
// others can write, or reached through another user's link, could be
// swapped for theirs.
func TestOpenStoreRefusesWhatOthersCanChange(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o777))
	if _, err := OpenStore(filepath.Join(dir, "ckpt"), true); err == nil || !strings.Contains(err.Error(), "can be changed by another user") {
		t.Fatalf("below a world-writable directory: err = %v", err)
	}
	must(t, os.Chmod(dir, 0o755))
	if _, err := OpenStore(filepath.Join(dir, "ckpt"), true); err != nil {
		t.Fatalf("below an own directory: %v", err)
	}
}

// TestPinThroughOwnLink pins a store named by the user's own symbolic link
// (a checkpoint directory on scratch, linked from home).
func TestPinThroughOwnLink(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "scratch")
	must(t, os.Mkdir(real, 0o700))
	link := filepath.Join(base, "ckpt")
	must(t, os.Symlink(real, link))
	s, err := OpenStore(link, false)
	must(t, err)
	must(t, s.Pin())
	commitGen(t, s, testFiles{"pages-1.img": []byte("one")})
	if _, err := os.Stat(filepath.Join(real, GenName(1))); err != nil {
		t.Fatalf("generation 1 is not behind the link: %v", err)
	}
}

// TestPinnedStoreFollowsItsDirectory renames a pinned checkpoint directory
// and puts another in its place: the store goes on writing into its own.
func TestPinnedStoreFollowsItsDirectory(t *testing.T) {
	s := newStore(t)
	must(t, s.Pin())
	commitGen(t, s, testFiles{"pages-1.img": []byte("one")})
	moved := s.Path + ".moved"
	must(t, os.Rename(s.Path, moved))
	must(t, os.Mkdir(s.Path, 0o700))
	commitGen(t, s, testFiles{"pages-1.img": []byte("two")})
	if _, err := os.Stat(filepath.Join(moved, GenName(2))); err != nil {
		t.Fatalf("generation 2 is not in the pinned directory: %v", err)
	}
	if ents, _ := os.ReadDir(s.Path); len(ents) != 0 {
		t.Fatalf("the directory put in its place got %d entries", len(ents))
	}
}
