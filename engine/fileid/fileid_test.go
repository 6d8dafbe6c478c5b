package fileid

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// TestCheckAndSameWritten records a file, changes it in the ways a node
// between checkpoint and restart does, and checks what Check and
// SameWritten say of each.
func TestCheckAndSameWritten(t *testing.T) {
	tests := []struct {
		name        string
		change      func(path string) error
		checkErr    string // "" when Check accepts the file
		sameWritten bool
	}{
		{"unchanged", func(string) error { return nil }, "", true},
		{"appended to", func(p string) error {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString("more")
			return err
		}, "changed since the checkpoint", true},
		{"replaced by other contents, same size and mtime", func(p string) error {
			old, err := os.Stat(p)
			if err != nil {
				return err
			}
			tmp := p + ".new"
			if err := os.WriteFile(tmp, []byte(strings.Repeat("y", 3*image.DigestSpan)), 0o644); err != nil {
				return err
			}
			if err := os.Chtimes(tmp, old.ModTime(), old.ModTime()); err != nil {
				return err
			}
			return os.Rename(tmp, p)
		}, "other contents", false},
		{"removed", func(p string) error { return os.Remove(p) }, "no such file", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, []byte(strings.Repeat("x", 3*image.DigestSpan)), 0o644); err != nil {
				t.Fatal(err)
			}
			want, err := Of(p)
			if err != nil {
				t.Fatal(err)
			}
			if want.Head == "" || want.Tail == "" {
				t.Fatalf("no digests recorded for a regular file: %+v", want)
			}
			if err := tt.change(p); err != nil {
				t.Fatal(err)
			}
			err = Check("", want)
			if tt.checkErr == "" && err != nil || tt.checkErr != "" && (err == nil || !strings.Contains(err.Error(), tt.checkErr)) {
				t.Errorf("Check: %v, want an error saying %q", err, tt.checkErr)
			}
			var st unix.Stat_t
			if unix.Stat(p, &st) != nil {
				return
			}
			// As on another node: the device and inode differ.
			other := *want
			other.Dev, other.Ino = ^uint64(0), ^uint64(0)
			same, err := SameWritten(p, &st, &other)
			if err != nil || same != tt.sameWritten {
				t.Errorf("SameWritten on another node: %v, %v; want %v", same, err, tt.sameWritten)
			}
		})
	}
}
