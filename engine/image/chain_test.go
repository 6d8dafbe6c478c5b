package image

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// commitChild commits a generation holding own as its pages-1.img and
// reading the files refs name from earlier generations, as an incremental
// checkpoint on parent does.
func commitChild(t *testing.T, s *Store, own []byte, parent int, refs ...FileRef) int {
	t.Helper()
	w, err := s.Begin()
	must(t, err)
	defer w.Abort()
	d, err := w.Create(PagesName(1))
	must(t, err)
	_, err = d.Write(own)
	must(t, err)
	must(t, d.Close())
	must(t, w.WriteJSON(CoreName(1), &Process{PID: 1, Comm: "app"}))
	m := &Manifest{Processes: []ProcessRef{{PID: 1, Comm: "app", Core: CoreName(1), Pages: PagesName(1)}},
		Parent: parent, Refs: refs}
	must(t, w.Commit(m))
	return w.Gen
}

// refTo is the FileRef a child of gen records for its pages-1.img.
func refTo(t *testing.T, s *Store, gen int) FileRef {
	t.Helper()
	g, err := s.Open(gen)
	must(t, err)
	f, ok := g.Sum(PagesName(1))
	if !ok {
		t.Fatalf("generation %d has no %s", gen, PagesName(1))
	}
	return FileRef{Generation: gen, FileSum: f}
}

// chain commits a full generation 1, generation 2 reading from 1, and
// generation 3 reading from 1 and 2.
func chain(t *testing.T) *Store {
	s := newStore(t)
	commitChild(t, s, []byte("full"), 0)
	commitChild(t, s, []byte("second"), 1, refTo(t, s, 1))
	commitChild(t, s, []byte("third"), 2, refTo(t, s, 1), refTo(t, s, 2))
	return s
}

func TestChainVerify(t *testing.T) {
	genDir := func(s *Store, gen int) string { return filepath.Join(s.Dir, GenName(gen)) }
	tests := []struct {
		name   string
		damage func(t *testing.T, s *Store)
		// want is the error substring of Verify, for generations 1 to 3
		// ("" verifies).
		want [3]string
	}{
		{"intact", func(*testing.T, *Store) {}, [3]string{}},
		{"parent data damaged", func(t *testing.T, s *Store) {
			must(t, os.WriteFile(filepath.Join(genDir(s, 1), PagesName(1)), []byte("FULL"), 0o600))
		}, [3]string{"checksum mismatch", "generation 2: needs pages-1.img of generation 1, its parent data: checksum mismatch", "generation 3: needs pages-1.img of generation 1"}},
		{"middle generation damaged", func(t *testing.T, s *Store) {
			must(t, os.WriteFile(filepath.Join(genDir(s, 2), PagesName(1)), []byte("SECOND"), 0o600))
		}, [3]string{"", "generation 2: pages-1.img: checksum mismatch", "generation 3: needs pages-1.img of generation 2"}},
		{"parent truncated", func(t *testing.T, s *Store) {
			must(t, os.Truncate(filepath.Join(genDir(s, 1), PagesName(1)), 2))
		}, [3]string{"truncated", "truncated", "truncated"}},
		{"parent gone", func(t *testing.T, s *Store) {
			must(t, os.RemoveAll(genDir(s, 1)))
		}, [3]string{"generation 1 does not exist in", "generation 2: needs pages-1.img of generation 1, its parent data: generation 1 is gone", "generation 1 is gone"}},
		{"parent holds other data", func(t *testing.T, s *Store) {
			resealManifest(t, genDir(s, 1), func(m *Manifest) {
				m.Files[slices.IndexFunc(m.Files, func(f FileSum) bool { return f.Name == PagesName(1) })].XXH64 = strings.Repeat("0", 16)
			})
		}, [3]string{"checksum mismatch", "no longer holds the pages-1.img this one was written against", "no longer holds"}},
		{"parent's own core damaged", func(t *testing.T, s *Store) {
			must(t, os.WriteFile(filepath.Join(genDir(s, 1), CoreName(1)), []byte("{}"), 0o600))
		}, [3]string{"core-1.json", "", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := chain(t)
			tt.damage(t, s)
			for i, want := range tt.want {
				gen := i + 1
				g, err := s.Open(gen)
				if err == nil {
					err = g.Verify()
				}
				switch {
				case want == "" && err != nil:
					t.Errorf("generation %d: %v, want it to verify", gen, err)
				case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
					t.Errorf("generation %d: error %v, want one containing %q", gen, err, want)
				}
			}
		})
	}
}

// TestChainFallback: with the middle generation's data damaged, the
// restart falls back past every generation that reads it.
func TestChainFallback(t *testing.T) {
	s := chain(t)
	must(t, os.WriteFile(filepath.Join(s.Dir, GenName(2), PagesName(1)), []byte("SECOND"), 0o600))
	g, err := s.NewestGood(nil)
	must(t, err)
	if g.Gen != 1 {
		t.Fatalf("NewestGood = generation %d, want 1", g.Gen)
	}
	infos, err := s.List(true)
	must(t, err)
	for _, in := range infos {
		if in.Valid != (in.Generation == 1) {
			t.Errorf("list: generation %d valid=%v (%s)", in.Generation, in.Valid, in.Error)
		}
	}
}

func TestPruneKeepsParents(t *testing.T) {
	s := newStore(t)
	for range 4 {
		commitChild(t, s, []byte("p"), 0)
	}
	// Generation 5 reads from 2; 6 from 5 (which still needs 2); 7 from 6
	// and 5.
	commitChild(t, s, []byte("p"), 4, refTo(t, s, 2))
	must(t, s.Prune(2))
	got, err := s.Generations()
	must(t, err)
	if want := []int{2, 4, 5}; !slices.Equal(got, want) {
		t.Fatalf("after Prune(2): %v, want %v", got, want)
	}
	commitChild(t, s, []byte("p"), 5, refTo(t, s, 5))
	must(t, s.Prune(2))
	got, err = s.Generations()
	must(t, err)
	if want := []int{2, 5, 6}; !slices.Equal(got, want) {
		t.Fatalf("while kept generation 5 reads 2: %v, want %v", got, want)
	}
	commitChild(t, s, []byte("p"), 6, refTo(t, s, 6), refTo(t, s, 5))
	must(t, s.Prune(2))
	got, err = s.Generations()
	must(t, err)
	// 5 stays for 7, whose data it holds, but not 2: 5 is no longer
	// one of the kept and becomes unusable on its own.
	if want := []int{5, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("once no kept generation reads 2: %v, want %v", got, want)
	}
	for _, gen := range got[1:] {
		g, err := s.Open(gen)
		must(t, err)
		must(t, g.Verify())
	}
}

func TestRefsChecked(t *testing.T) {
	tests := []struct {
		name string
		edit func(m *Manifest)
		want string
	}{
		{"later generation", func(m *Manifest) { m.Refs = []FileRef{{Generation: 7, FileSum: FileSum{Name: PagesName(1)}}} }, "is not earlier than"},
		{"own generation", func(m *Manifest) {
			m.Refs = []FileRef{{Generation: m.Generation, FileSum: FileSum{Name: PagesName(1)}}}
		}, "is not earlier than"},
		{"path", func(m *Manifest) { m.Refs = []FileRef{{Generation: 1, FileSum: FileSum{Name: "../x"}}} }, "must not contain a slash"},
		{"twice", func(m *Manifest) {
			r := FileRef{Generation: 1, FileSum: FileSum{Name: PagesName(1)}}
			m.Refs = []FileRef{r, r}
		}, "twice"},
		{"later parent", func(m *Manifest) { m.Parent = m.Generation }, "parent generation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			commitChild(t, s, []byte("a"), 0)
			gen := commitChild(t, s, []byte("b"), 0)
			resealManifest(t, filepath.Join(s.Dir, GenName(gen)), tt.edit)
			_, err := s.Open(gen)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
