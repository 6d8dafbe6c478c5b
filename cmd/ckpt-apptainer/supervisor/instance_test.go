package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstanceRegistry(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	if _, err := instanceCkptDir("web"); err == nil || !strings.Contains(err.Error(), "--ckpt-dir") {
		t.Errorf("unregistered instance: %v", err)
	}
	if err := registerInstance("web", "/scratch/ckpt-a"); err != nil {
		t.Fatal(err)
	}
	// A restart registers the name again, maybe with another directory.
	if err := registerInstance("web", "/scratch/ckpt-b"); err != nil {
		t.Fatal(err)
	}
	if err := registerInstance("db", "/scratch/ckpt-db"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"web": "/scratch/ckpt-b", "db": "/scratch/ckpt-db"} {
		got, err := instanceCkptDir(name)
		if err != nil || got != want {
			t.Errorf("instance %s: %q, %v; want %q", name, got, err, want)
		}
	}
	path, err := registryPath("web")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("registry directory: %v, %v", fi, err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := instanceCkptDir("web"); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("corrupt entry: %v", err)
	}
	for _, bad := range []string{"", "a/b", "..", "."} {
		if err := registerInstance(bad, "/x"); err == nil {
			t.Errorf("instance name %q accepted", bad)
		}
	}
}
