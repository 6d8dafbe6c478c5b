package integration

import (
	"archive/tar"
	"compress/gzip"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runIn runs a command and returns its output, failing the test when it
// fails.
func runIn(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestInstall installs into a temporary prefix with `make install` and
// uses what a user gets: the binary, its man page, the bash completion and
// the modulefile, from the tree where it was installed and from a copy
// moved elsewhere.
func TestInstall(t *testing.T) {
	if _, err := os.Stat("../bin/ckpt-apptainer"); err != nil {
		skipOrFail(t, "../bin/ckpt-apptainer missing: run make build")
	}
	for _, tool := range []string{"make", "man", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "%s is not installed (scripts/install-deps.sh installs it)", tool)
		}
	}
	prefix := filepath.Join(t.TempDir(), "prefix")
	// -o build: the binary the other tests run is not rebuilt under them.
	runIn(t, "..", nil, "make", "-s", "-o", "build", "install", "PREFIX="+prefix)

	bin := filepath.Join(prefix, "bin", "ckpt-apptainer")
	if out := runIn(t, "", nil, bin, "version"); !strings.HasPrefix(out, "ckpt-apptainer ") || !strings.Contains(out, "go ") {
		t.Errorf("installed version says:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(prefix, "bin", "ckpt-apptainer-cuda")); err != nil {
		t.Errorf("the GPU helper is not beside the binary: %v", err)
	}

	page := runIn(t, "", []string{"MANWIDTH=120"}, "man", "-P", "cat", "-l", filepath.Join(prefix, "share/man/man1/ckpt-apptainer.1"))
	for _, want := range []string{"ckpt-apptainer(1)", "restart", "--interval", "checkpoint the running job now"} {
		if !strings.Contains(page, want) {
			t.Errorf("the man page does not say %q:\n%.2000s", want, page)
		}
	}

	completion := filepath.Join(prefix, "share/bash-completion/completions/ckpt-apptainer")
	for _, c := range []struct {
		words []string // the last is the word being completed
		want  string
	}{
		{[]string{"ckpt-apptainer", "res"}, "restart"},
		{[]string{"ckpt-apptainer", "restart", "--ke"}, "--keep"},
		{[]string{"ckpt-apptainer", "--deb"}, "--debug"},
		{[]string{"ckpt-apptainer", "launch", "--", filepath.Join(prefix, "bi")}, filepath.Join(prefix, "bin")},
	} {
		script := `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ckpt_apptainer; printf '%s\n' "${COMPREPLY[@]}"`
		args := append([]string{"-c", script, "bash", completion}, c.words...)
		got := runIn(t, "", []string{"PATH=" + filepath.Join(prefix, "bin") + ":" + os.Getenv("PATH")}, "bash", args...)
		if strings.TrimSpace(got) != c.want {
			t.Errorf("completing %q offers %q, want %q", c.words, got, c.want)
		}
	}

	// The modulefile finds the tree it lies in: the same file works in a
	// copy moved elsewhere.
	moved := filepath.Join(t.TempDir(), "moved")
	runIn(t, "", nil, "cp", "-a", prefix, moved)
	for _, root := range []string{prefix, moved} {
		init := "/usr/share/modules/init/bash"
		if _, err := os.Stat(init); err != nil {
			skipOrFail(t, "environment-modules is not installed (scripts/install-deps.sh installs it)")
		}
		script := `source ` + init + ` && module use "$1/share/modulefiles" && module load ckpt-apptainer && command -v ckpt-apptainer && echo "MANPATH=$MANPATH" && ckpt-apptainer version`
		out := runIn(t, "", nil, "bash", "-c", script, "bash", root)
		for _, want := range []string{filepath.Join(root, "bin", "ckpt-apptainer") + "\n", "MANPATH=" + filepath.Join(root, "share", "man"), "ckpt-apptainer "} {
			if !strings.Contains(out, want) {
				t.Errorf("module load from %s: output does not have %q:\n%s", root, want, out)
			}
		}
	}
}

// TestRelease builds the release archive and checks what it holds: a
// static binary (no interpreter: it runs whatever the node's libc), the
// installed tree, and a checksum file that verifies.
func TestRelease(t *testing.T) {
	for _, tool := range []string{"make", "go", "git", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "%s is not installed", tool)
		}
	}
	dist := t.TempDir()
	out := runIn(t, "..", nil, "make", "-s", "release", "DIST="+dist)
	archive := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	if !strings.HasSuffix(archive, "-linux-amd64.tar.gz") {
		t.Fatalf("make release printed %q, want the archive's path last", out)
	}
	runIn(t, dist, nil, "sha256sum", "-c", "SHA256SUMS")

	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	top := strings.TrimSuffix(filepath.Base(archive), "-linux-amd64.tar.gz")
	want := map[string]bool{
		"bin/ckpt-apptainer": false, "bin/ckpt-apptainer-cuda": false, "share/man/man1/ckpt-apptainer.1": false,
		"share/bash-completion/completions/ckpt-apptainer": false, "README.md": false,
	}
	unpacked := t.TempDir()
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rel, ok := strings.CutPrefix(h.Name, top+"/")
		if !ok {
			t.Errorf("%s is outside %s/", h.Name, top)
			continue
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s is owned by %d:%d, want 0:0", h.Name, h.Uid, h.Gid)
		}
		if _, ok := want[rel]; ok {
			want[rel] = true
		}
		if rel == "bin/ckpt-apptainer" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(unpacked, "ckpt-apptainer")
			if err := os.WriteFile(path, b, 0o755); err != nil {
				t.Fatal(err)
			}
			ef, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ef.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("the released binary is dynamically linked (it names an interpreter)")
				}
			}
			ef.Close()
			if out := runIn(t, "", nil, path, "version"); !strings.Contains(out, "ckpt-apptainer "+strings.TrimPrefix(top, "ckpt-apptainer-")) {
				t.Errorf("the released binary's version says:\n%s\nwant version %s", out, top)
			}
		}
	}
	for name, found := range want {
		if !found {
			t.Errorf("the archive has no %s", name)
		}
	}
}
