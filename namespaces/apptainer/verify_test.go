package apptainer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestVerify(t *testing.T) {
	tests := []struct {
		name string
		// change alters the files after the record was made and returns
		// the image path to give Verify.
		change func(t *testing.T, dir string) string
		want   []string // substrings of the error; none means success
	}{
		{name: "unchanged", change: func(t *testing.T, dir string) string { return "" }},
		{name: "touched but same", change: func(t *testing.T, dir string) string {
			later := time.Now().Add(time.Hour)
			must(t, os.Chtimes(filepath.Join(dir, "img.sif"), later, later))
			return ""
		}},
		{name: "copied elsewhere without its mtime", change: func(t *testing.T, dir string) string {
			b, err := os.ReadFile(filepath.Join(dir, "img.sif"))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, "copy.sif"), b, 0o644))
			must(t, os.Remove(filepath.Join(dir, "img.sif")))
			return filepath.Join(dir, "copy.sif")
		}},
		{name: "moved", change: func(t *testing.T, dir string) string {
			must(t, os.Rename(filepath.Join(dir, "img.sif"), filepath.Join(dir, "moved.sif")))
			return ""
		}, want: []string{"img.sif is missing", "put the original image back", "restart --image PATH"}},
		{name: "changed", change: func(t *testing.T, dir string) string {
			writeSIF(t, filepath.Join(dir, "img.sif"), "version two, longer")
			return ""
		}, want: []string{"not the one the checkpoint used", "size", "mtime", "digest sha256:"}},
		{name: "changed same size", change: func(t *testing.T, dir string) string {
			writeSIF(t, filepath.Join(dir, "img.sif"), "version 2")
			later := time.Now().Add(time.Hour)
			must(t, os.Chtimes(filepath.Join(dir, "img.sif"), later, later))
			return ""
		}, want: []string{"not the one", "mtime", "digest"}},
		{name: "wrong image named", change: func(t *testing.T, dir string) string {
			writeSIF(t, filepath.Join(dir, "other.sif"), "other")
			return filepath.Join(dir, "other.sif")
		}, want: []string{"other.sif is not the one", "name the image the job ran with"}},
		{name: "bind source gone", change: func(t *testing.T, dir string) string {
			must(t, os.Remove(filepath.Join(dir, "data")))
			return ""
		}, want: []string{"bind source " + "DIR/data (bound at /data) no longer exists", "re-create"}},
		{name: "everything gone", change: func(t *testing.T, dir string) string {
			must(t, os.Remove(filepath.Join(dir, "data")))
			must(t, os.Remove(filepath.Join(dir, "img.sif")))
			return ""
		}, want: []string{"missing", "no longer exists"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			must(t, os.Mkdir(filepath.Join(dir, "data"), 0o755))
			writeSIF(t, filepath.Join(dir, "img.sif"), "version 1")
			img, err := (&DigestCache{}).Image(filepath.Join(dir, "img.sif"))
			must(t, err)
			rec := &image.Container{Image: img, Binds: []image.Bind{{Source: filepath.Join(dir, "data"), Destination: "/data"}}}
			err = Verify(rec, tt.change(t, dir))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("error %v is not a *MismatchError", err)
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "DIR", dir); !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestVerifyHashesOnlyWhenNeeded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img.sif")
	writeSIF(t, path, "v1")
	img, err := Digests.Image(path)
	must(t, err)
	// A record whose digest is wrong still passes while size and mtime
	// match: proof that Verify did not hash the file.
	img.Digest = "sha256:not-hashed"
	if err := Verify(&image.Container{Image: img}, ""); err != nil {
		t.Fatalf("size and mtime match, yet: %v", err)
	}
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(path, later, later))
	if err := Verify(&image.Container{Image: img}, ""); err == nil || !strings.Contains(err.Error(), "digest sha256:not-hashed -> sha256:") {
		t.Fatalf("mtime changed: want a digest comparison, got %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
