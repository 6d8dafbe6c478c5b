package supervisor

import (
	"strings"
	"testing"
)

// TestBadOptionsRefused checks that settings a user can get wrong are
// refused with an error naming them, before any job is started.
func TestBadOptionsRefused(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		argv []string
		want string
	}{
		{"no command", Options{LocalLimit: "1GiB"}, nil, "no command given"},
		{"negative interval", Options{Interval: -5, LocalLimit: "1GiB"}, []string{"true"}, "--interval -5"},
		{"unreadable size", Options{LocalLimit: "lots"}, []string{"true"}, `--local-limit "lots"`},
		{"unknown signal", Options{LocalLimit: "1GiB", Signal: "NOPE"}, []string{"true"}, "NOPE"},
		{"missing hooks file", Options{LocalLimit: "1GiB", Hooks: "/nonexistent/hooks.json"}, []string{"true"}, "/nonexistent/hooks.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.CkptDir = t.TempDir()
			err := Launch(tt.opts, tt.argv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Launch: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// TestRestartWithoutCheckpoint checks that a restart in a directory with
// no checkpoint says where it looked, and that a generation that is not a
// number is refused.
func TestRestartWithoutCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if err := Restart(Options{CkptDir: dir, LocalLimit: "1GiB"}, ""); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("restart with no checkpoint: %v, want an error naming %s", err, dir)
	}
	if err := Restart(Options{CkptDir: dir, LocalLimit: "1GiB"}, "latest"); err == nil || !strings.Contains(err.Error(), "positive number") {
		t.Errorf("restart latest: %v, want an error asking for a number", err)
	}
}
