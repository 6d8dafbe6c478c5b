package namespaces

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreInitRuns runs the pre-init outside any sandbox: there ns_last_pid
// is the host's. Without the capability to write it the program must exit
// with its own status instead of running the target.
func TestPreInitRuns(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("as root the write to the host's ns_last_pid would succeed and disturb the host")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "preinit")
	if err := os.WriteFile(bin, preInitELF(1000), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := os.StartProcess(bin, []string{"/bin/true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != preInitLastPIDFailed {
		t.Errorf("exit %d, want %d", st.ExitCode(), preInitLastPIDFailed)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "tool"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(bin, "data"), []byte("x"), 0o644)
	tests := []struct {
		name, argv0, path, dir, want, wantErr string
	}{
		{"absolute", "/bin/sh", "", "", "/bin/sh", ""},
		{"relative with slash", "./app", "", "", "./app", ""},
		{"found in PATH", "tool", "/nonexistent:" + bin, "", filepath.Join(bin, "tool"), ""},
		{"relative PATH entry", "tool", "bin", dir, "./bin/tool", ""},
		{"not executable", "data", bin, "", "", "not found"},
		{"missing", "nope", bin, "", "", "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LookPath(tt.argv0, []string{"PATH=" + tt.path}, tt.dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("LookPath = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
