package image

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadManifest feeds arbitrary bytes to the manifest reader: it may
// refuse them, never crash, and what it accepts lists only valid names.
func FuzzReadManifest(f *testing.F) {
	s, err := OpenStore(filepath.Join(f.TempDir(), "ckpt"), true)
	if err != nil {
		f.Fatal(err)
	}
	commitGen(f, s, testFiles{"pages-1.img": []byte("data")})
	good, err := os.ReadFile(filepath.Join(s.Dir, GenName(1), ManifestName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format_version":1,"generation":1,"files":[{"name":"../x"}]}`))
	f.Add([]byte(`{"format_version":1,"generation":1,"processes":[{"pid":2,"core":"../../evil-core.json"}]}`))
	f.Add([]byte(`{"format_version":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &Generation{Gen: 1, Dir: t.TempDir()}
		if err := os.WriteFile(g.Path(ManifestName), b, 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := g.readManifest()
		if err != nil {
			return
		}
		for _, fs := range m.Files {
			if checkName(fs.Name) != nil {
				t.Fatalf("accepted a manifest listing %q", fs.Name)
			}
		}
		for _, p := range m.Processes {
			if checkName(p.Core) != nil {
				t.Fatalf("accepted a manifest whose core is %q", p.Core)
			}
		}
	})
}
