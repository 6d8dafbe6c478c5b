package safepath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	const stranger = 54321
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to check
		chown   bool                                  // needs root to make a stranger's file
		wantErr string                                // "" for a path that passes
	}{
		{"own file", func(t *testing.T, d string) string { return write(t, d, "hooks.json", 0o644) }, false, ""},
		{"world-writable file", func(t *testing.T, d string) string { return write(t, d, "hooks.json", 0o666) }, false, "others can write it"},
		{"group-writable file", func(t *testing.T, d string) string { return write(t, d, "hooks.json", 0o664) }, false, "others can write it"},
		{"in a sticky world-writable directory", func(t *testing.T, d string) string {
			sub := mkdir(t, d, "tmp", 0o1777)
			return write(t, sub, "hooks.json", 0o644)
		}, false, ""},
		{"in a world-writable directory without the sticky bit", func(t *testing.T, d string) string {
			sub := mkdir(t, d, "open", 0o777)
			return write(t, sub, "hooks.json", 0o644)
		}, false, "can be changed by another user"},
		{"in a directory your own group may write", func(t *testing.T, d string) string {
			sub := mkdir(t, d, "mine", 0o775)
			return write(t, sub, "hooks.json", 0o644)
		}, false, ""},
		{"in a directory another group may write", func(t *testing.T, d string) string {
			sub := mkdir(t, d, "project", 0o775)
			must(t, os.Chown(sub, os.Geteuid(), stranger))
			return write(t, sub, "hooks.json", 0o644)
		}, true, "can be changed by another user"},
		{"in a sticky directory another group may write", func(t *testing.T, d string) string {
			sub := mkdir(t, d, "project", 0o1775)
			must(t, os.Chown(sub, os.Geteuid(), stranger))
			return write(t, sub, "hooks.json", 0o644)
		}, true, ""},
		{"another user's file", func(t *testing.T, d string) string {
			p := write(t, d, "hooks.json", 0o644)
			must(t, os.Chown(p, stranger, stranger))
			return p
		}, true, "belongs to uid 54321"},
		{"in another user's directory", func(t *testing.T, d string) string {
			sub := mkdir(t, d, "theirs", 0o755)
			p := write(t, sub, "hooks.json", 0o644)
			must(t, os.Chown(sub, stranger, stranger))
			return p
		}, true, "can be changed by another user"},
		{"another user's symlink in a sticky directory", func(t *testing.T, d string) string {
			sub := mkdir(t, d, "tmp", 0o1777)
			target := write(t, d, "real.json", 0o644)
			link := filepath.Join(sub, "hooks.json")
			must(t, os.Symlink(target, link))
			must(t, os.Lchown(link, stranger, stranger))
			return link
		}, true, "symbolic link"},
		{"own symlink to own file", func(t *testing.T, d string) string {
			write(t, d, "real.json", 0o644)
			link := filepath.Join(d, "hooks.json")
			must(t, os.Symlink("real.json", link))
			return link
		}, false, ""},
		{"missing", func(t *testing.T, d string) string { return filepath.Join(d, "none.json") }, false, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.chown && os.Geteuid() != 0 {
				t.Skip("making another user's file needs root")
			}
			dir := t.TempDir()
			must(t, os.Chmod(dir, 0o755))
			err := Check(tt.setup(t, dir), "hooks file")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func write(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	must(t, os.WriteFile(p, []byte("{}"), 0o600))
	must(t, os.Chmod(p, mode))
	return p
}

func mkdir(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	must(t, os.Mkdir(p, 0o700))
	if mode&0o1000 != 0 { // os.FileMode spells the sticky bit its own way
		mode = mode&0o777 | os.ModeSticky
	}
	must(t, os.Chmod(p, mode))
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
