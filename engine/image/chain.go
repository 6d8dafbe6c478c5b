package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// An incremental generation stores only the pages that changed since its
// parent; its page runs read the others from the page files of earlier
// generations (always the generation that wrote the data, never through a
// chain of references). Those files are listed in the manifest's Refs with
// the checksums their own manifests give them, so a generation is usable
// exactly when its own files and every file it refers to verify, and a
// pruning never removes a generation that a kept one still reads.

// FileRef is a data file of an earlier generation that this one reads.
type FileRef struct {
	Generation int `json:"generation"`
	FileSum
}

// sibling is committed generation gen of the same store, not yet opened.
func (g *Generation) sibling(gen int) *Generation {
	return &Generation{Gen: gen, Dir: filepath.Join(filepath.Dir(g.Dir), GenName(gen))}
}

// Ref returns the entry of Refs for file name of generation gen.
func (g *Generation) Ref(gen int, name string) (FileRef, bool) {
	for _, r := range g.Manifest.Refs {
		if r.Generation == gen && r.Name == name {
			return r, true
		}
	}
	return FileRef{}, false
}

// OpenFrom opens data file name of generation gen: this generation's own
// when gen is 0 or its own number, else a file of an earlier generation
// that its Refs list.
func (g *Generation) OpenFrom(gen int, name string) (*os.File, error) {
	if gen == 0 || gen == g.Gen {
		return g.Open(name)
	}
	if _, ok := g.Ref(gen, name); !ok {
		return nil, fmt.Errorf("generation %d: %s of generation %d is not in the manifest's refs", g.Gen, name, gen)
	}
	s := g.sibling(gen)
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("generation %d: %w", g.Gen, err)
	}
	f, err := os.OpenFile(s.Path(name), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("generation %d: data of generation %d: %w", g.Gen, gen, err)
	}
	return f, nil
}

// checkRefs checks the manifest's Refs: each names an earlier generation
// and a valid file name, once.
func checkRefs(m *Manifest) error {
	seen := map[FileRef]bool{}
	for i, r := range m.Refs {
		if r.Generation <= 0 || r.Generation >= m.Generation {
			return fmt.Errorf("refs[%d]: generation %d is not earlier than %d", i, r.Generation, m.Generation)
		}
		if err := checkName(r.Name); err != nil {
			return fmt.Errorf("refs[%d]: %w", i, err)
		}
		if r.Size < 0 {
			return fmt.Errorf("refs[%d]: %s has size %d", i, r.Name, r.Size)
		}
		key := FileRef{Generation: r.Generation, FileSum: FileSum{Name: r.Name}}
		if seen[key] {
			return fmt.Errorf("refs[%d]: lists %s of generation %d twice", i, r.Name, r.Generation)
		}
		seen[key] = true
	}
	if m.Parent < 0 || (m.Parent > 0 && m.Parent >= m.Generation) {
		return fmt.Errorf("parent generation %d is not earlier than %d", m.Parent, m.Generation)
	}
	return nil
}

// refTarget is a referenced file as check verifies it: in the referenced
// generation's directory, against the sum this generation recorded.
type refTarget struct {
	ref FileRef
	gen *Generation
	err error // why the referenced generation cannot be used at all
}

// refTargets finds every referenced file's generation and checks that its
// manifest still lists the file with the size and checksum recorded here:
// a generation number reused for other data is caught before any byte is
// read.
func (g *Generation) refTargets() []refTarget {
	opened := map[int]*Generation{}
	openErr := map[int]error{}
	var out []refTarget
	for _, r := range g.Manifest.Refs {
		t := refTarget{ref: r}
		rg, ok := opened[r.Generation]
		if !ok && openErr[r.Generation] == nil {
			var err error
			rg = g.sibling(r.Generation)
			if rg.Manifest, err = rg.readManifest(); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					err = fmt.Errorf("generation %d is gone", r.Generation)
				}
				openErr[r.Generation] = err
				rg = nil
			} else {
				opened[r.Generation] = rg
			}
		}
		switch {
		case rg == nil:
			t.err = openErr[r.Generation]
		default:
			t.gen = rg
			if have, ok := rg.Sum(r.Name); !ok || have != r.FileSum {
				t.err = fmt.Errorf("generation %d no longer holds the %s this one was written against", r.Generation, r.Name)
			}
		}
		out = append(out, t)
	}
	return out
}

// refError words the failure of a referenced file.
func refError(g *Generation, r FileRef, err error) error {
	return fmt.Errorf("generation %d: needs %s of generation %d, its parent data: %w", g.Gen, r.Name, r.Generation, err)
}

// Needs returns the earlier generations this one reads data from,
// ascending.
func (m *Manifest) Needs() []int {
	set := map[int]bool{}
	for _, r := range m.Refs {
		set[r.Generation] = true
	}
	out := make([]int, 0, len(set))
	for gen := range set {
		out = append(out, gen)
	}
	sort.Ints(out)
	return out
}

// needed returns the generations that the generations keep read data from.
// A kept generation whose manifest cannot be read protects nothing: it
// cannot be restored anyway.
func (s *Store) needed(keep []int) map[int][]int {
	out := map[int][]int{}
	for _, gen := range keep {
		g, err := s.Open(gen)
		if err != nil {
			continue
		}
		for _, n := range g.Manifest.Needs() {
			out[n] = append(out[n], gen)
		}
	}
	return out
}
