package fds

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fileid"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/node"
)

// TestRegularRoundTrip restores files at their offsets with their flags,
// a directory, and the devices that are opened again by path.
func TestRegularRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data")
	if err := os.WriteFile(path, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	rw, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	rw.Seek(7, 0)
	app, err := os.OpenFile(filepath.Join(dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	app.WriteString("appended\n")
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	null, err := os.OpenFile("/dev/null", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	tp := roundTrip(t, rw, app, d, null)
	for i, want := range []image.FDKind{image.FDFile, image.FDFile, image.FDFile, image.FDDevice} {
		if got := tp.before[i].Kind; got != want {
			t.Errorf("fd %d dumped as %s, want %s", tp.before[i].Num, got, want)
		}
	}
	if tp.before[0].Pos != 7 {
		t.Errorf("offset dumped as %d, want 7", tp.before[0].Pos)
	}
	tp.same(t)
}

// TestRollback checks what a restore does to a file the job had open,
// found as it is now: cut back only when it is the job's file, left alone
// or refused otherwise, never cut below its length at checkpoint time.
func TestRollback(t *testing.T) {
	jobText := bytes.Repeat([]byte("job line\n"), 2000) // 18000 bytes: head and tail digests differ
	const appendFlags = unix.O_WRONLY | unix.O_APPEND
	tests := []struct {
		name   string
		flags  int
		strict bool
		// now makes the file as the restart finds it, from the path of
		// the job's file at checkpoint time.
		now      func(t *testing.T, path string)
		wantSize int64  // size of the file afterwards
		wantErr  string // "" for none; a refusal must be a node.Error
		wantLog  string // a word the warning or info must hold
	}{
		{"grew: cut back", appendFlags, false, func(t *testing.T, p string) { appendTo(t, p, "after the checkpoint\n") },
			int64(len(jobText)), "", "rolling"},
		{"unchanged", appendFlags, false, func(*testing.T, string) {}, int64(len(jobText)), "", ""},
		{"shorter: kept", appendFlags, false, func(t *testing.T, p string) { os.Truncate(p, 100) }, 100, "", "shorter"},
		{"rotated, appending: left alone", appendFlags, false, rotate, 48000, "", "appends"},
		{"rotated, appending, strict: refused", appendFlags, true, rotate, 48000, "--strict", ""},
		{"rotated, writing at an offset: refused", unix.O_WRONLY, false, rotate, 48000, "overwrite", ""},
		{"rotated, read only: left alone", unix.O_RDONLY, false, rotate, 48000, "", "reads it"},
		{"same file on another node (copied)", appendFlags, false, func(t *testing.T, p string) {
			b, _ := os.ReadFile(p)
			os.Remove(p)
			os.WriteFile(p, append(b, "more\n"...), 0o644)
		}, int64(len(jobText)), "", "rolling"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out.txt")
			if err := os.WriteFile(path, jobText, 0o644); err != nil {
				t.Fatal(err)
			}
			id, err := fileid.Of(path)
			if err != nil {
				t.Fatal(err)
			}
			p := &image.Process{PID: 2, Files: []image.FD{{Num: 3, Kind: image.FDFile, Flags: tt.flags, Pos: id.Size, Path: path, File: id}}}
			tt.now(t, path)
			log, hook := test.NewNullLogger()
			log.SetLevel(logrus.DebugLevel)
			err = Rollback(p, RollbackOptions{Strict: tt.strict, Log: log}, "")
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "":
				var ne *node.Error
				if !errors.As(err, &ne) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want a node.Error saying %q", err, tt.wantErr)
				}
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != tt.wantSize {
				t.Errorf("file is %d bytes afterwards, want %d", fi.Size(), tt.wantSize)
			}
			var logged []string
			for _, e := range hook.AllEntries() {
				logged = append(logged, e.Message)
			}
			if tt.wantLog != "" && !strings.Contains(strings.Join(logged, "\n"), tt.wantLog) {
				t.Errorf("log %q does not say %q", logged, tt.wantLog)
			}
		})
	}
}

// rotate moves the file away and puts a stranger's 48000-byte file in its
// place, as logrotate without copytruncate would.
func rotate(t *testing.T, path string) {
	t.Helper()
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte("someone else's text\n"), 2400), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
