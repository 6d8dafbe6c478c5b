package namespaces

import (
	"os"
	"path/filepath"
	"testing"
)

// TestUserNetStack: $CKPT_APPTAINER_USERNET picks the stack; unset, pasta
// comes before slirp4netns; none, or nothing installed, is loopback only.
func TestUserNetStack(t *testing.T) {
	bin := t.TempDir()
	fake := func(name string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		installed []string
		env       string
		want      string // "" for none
		err       bool
	}{
		{nil, "", "", false},
		{[]string{"slirp4netns"}, "", "slirp4netns", false},
		{[]string{"pasta", "slirp4netns"}, "", "pasta", false},
		{[]string{"pasta", "slirp4netns"}, "slirp4netns", "slirp4netns", false},
		{[]string{"pasta"}, "none", "", false},
		{[]string{"pasta"}, "slirp4netns", "", true},
		{[]string{"pasta"}, "vpnkit", "", true},
	}
	for _, tt := range tests {
		os.RemoveAll(bin)
		os.Mkdir(bin, 0o755)
		for _, name := range tt.installed {
			fake(name)
		}
		t.Setenv("PATH", bin)
		t.Setenv(UserNetEnv, tt.env)
		name, path, err := UserNetStack()
		if (err != nil) != tt.err {
			t.Errorf("installed %v, %s=%q: error %v, want error %v", tt.installed, UserNetEnv, tt.env, err, tt.err)
			continue
		}
		got := ""
		if path != "" {
			got = name
		}
		if got != tt.want {
			t.Errorf("installed %v, %s=%q: stack %q (%s), want %q", tt.installed, UserNetEnv, tt.env, got, path, tt.want)
		}
	}
}
