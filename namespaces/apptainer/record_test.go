package apptainer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// writeSIF writes a file that starts like a SIF image, followed by body.
func writeSIF(t *testing.T, path, body string) string {
	t.Helper()
	content := "#!/usr/bin/env run-singularity\n\x00SIF_MAGIC\x0001\x0002\x00" + body
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fakeRuntime puts an executable named apptainer that prints version into
// a new directory and returns the directory.
func fakeRuntime(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho '" + version + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "apptainer"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNewRecord(t *testing.T) {
	bin := fakeRuntime(t, "apptainer version 9.9.9-test")
	work := t.TempDir()
	digest := writeSIF(t, filepath.Join(work, "img.sif"), "payload")
	env := []string{"PATH=" + bin, "APPTAINER_BIND=data:/data"}
	argv := []string{"apptainer", "exec", "-B", "/etc:/hostetc:ro", "img.sif", "app", "-x"}
	cmd, err := Parse(argv, env)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := NewRecord(cmd, env, work)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(work, "img.sif"))
	want := image.ContainerImage{Path: filepath.Join(work, "img.sif"), Size: fi.Size(), MTime: fi.ModTime().UTC(), Digest: digest}
	if rec.Image != want {
		t.Errorf("image %+v, want %+v", rec.Image, want)
	}
	if rec.Runtime != "apptainer" || rec.Version != "apptainer version 9.9.9-test" || rec.Subcommand != Exec || rec.ImageArg != 4 || rec.Dir != work {
		t.Errorf("record %+v", rec)
	}
	wantBinds := []image.Bind{
		{Source: "/etc", Destination: "/hostetc", Options: "ro"},
		{Source: filepath.Join(work, "data"), Destination: "/data"},
	}
	if len(rec.Binds) != 2 || rec.Binds[0] != wantBinds[0] || rec.Binds[1] != wantBinds[1] {
		t.Errorf("binds %+v, want %+v", rec.Binds, wantBinds)
	}
	argv[5] = "changed"
	if rec.Argv[5] != "app" {
		t.Error("the record shares the caller's argv")
	}
}

func TestNewRecordRefusesImages(t *testing.T) {
	bin := fakeRuntime(t, "apptainer version 1")
	work := t.TempDir()
	if err := os.Mkdir(filepath.Join(work, "sandbox"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "ext3.img"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "sq.img"), []byte("hsqs and more"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		image string
		want  string // "" for accepted
	}{
		{"sandbox", "sandbox directory"},
		{"ext3.img", "neither a SIF nor a squashfs"},
		{"missing.sif", "no such file"},
		{"sq.img", ""},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			cmd, err := Parse([]string{"apptainer", "exec", tt.image, "app"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewRecord(cmd, []string{"PATH=" + bin}, work)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
			if tt.image != "missing.sif" && (!errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "apptainer build")) {
				t.Errorf("error %v should say what to do", err)
			}
		})
	}
}

func TestRuntimeVersionNotFound(t *testing.T) {
	_, err := RuntimeVersion("apptainer", []string{"PATH=" + t.TempDir()}, "/")
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("error %v", err)
	}
}

func TestDigestCache(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "img.sif")
	d1 := writeSIF(t, path, "one")
	c := &DigestCache{}
	for i := 0; i < 3; i++ {
		img, err := c.Image(path)
		if err != nil {
			t.Fatal(err)
		}
		if img.Digest != d1 {
			t.Fatalf("digest %s, want %s", img.Digest, d1)
		}
	}
	if c.hashed != 1 {
		t.Errorf("hashed %d times for one version of the file, want 1", c.hashed)
	}
	// Same size, new contents, new mtime: a new version.
	d2 := writeSIF(t, path, "two")
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	img, err := c.Image(path)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != d2 || c.hashed != 2 {
		t.Errorf("after rewrite: digest %s (want %s), hashed %d (want 2)", img.Digest, d2, c.hashed)
	}
	// The cache stays bounded.
	for i := 0; i < digestCacheSize+4; i++ {
		p := filepath.Join(dir, "x"+string(rune('a'+i))+".sif")
		writeSIF(t, p, "x")
		if _, err := c.Image(p); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.entries) > digestCacheSize {
		t.Errorf("cache holds %d entries, limit %d", len(c.entries), digestCacheSize)
	}
}
