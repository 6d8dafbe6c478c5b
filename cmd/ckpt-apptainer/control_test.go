package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

func TestStartingSupervisor(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	tests := []struct {
		name string
		lock string // lock file content; "" for none
		want int
	}{
		{"this program holds it", fmt.Sprintf("%d %s\n", self, host), self},
		{"no lock file", "", 0},
		{"another program has the pid", fmt.Sprintf("%d %s\n", os.Getppid(), host), 0},
		{"another host", fmt.Sprintf("%d %s-elsewhere\n", self, host), 0},
		{"garbage", "not a holder", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.lock != "" {
				if err := os.WriteFile(filepath.Join(dir, image.LockName), []byte(tc.lock), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if got := startingSupervisor(dir); got != tc.want {
				t.Errorf("startingSupervisor() = %d, want %d", got, tc.want)
			}
		})
	}
}
