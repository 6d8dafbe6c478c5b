package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// writeGeneration commits one small generation with manifest m into the
// checkpoint directory dir.
func writeGeneration(t *testing.T, dir string, m *image.Manifest) {
	t.Helper()
	st, err := image.OpenStore(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, p := range m.Processes {
		if err := w.WriteJSON(p.Core, &image.Process{PID: p.PID, Comm: p.Comm}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
}

// runInspect runs `ckpt-apptainer inspect args...` and returns its output.
func runInspect(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := &cli.App{Name: "ckpt-apptainer", Writer: &out, Commands: []*cli.Command{inspectCommand()}}
	err := app.Run(append([]string{"ckpt-apptainer", "inspect"}, args...))
	return out.String(), err
}

func TestInspect(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	plain := &image.Manifest{
		Created: created, ToolVersion: "test", Kernel: "6.18.0", Arch: "amd64", Host: "node1",
		Job:       image.Job{MainPID: 2, Argv: []string{"./app", "-n", "4"}, Cwd: "/work", UID: 1001, GID: 1001},
		Processes: []image.ProcessRef{{PID: 2, PPID: 1, Comm: "app", Core: image.CoreName(2), Pages: image.PagesName(2)}},
		Stats:     image.Stats{Bytes: 3 << 20, PageBytes: 2 << 20, Processes: 1, Threads: 1, FreezeMethod: "cgroup v2"},
	}
	writeGeneration(t, dir, plain)
	mtime := time.Date(2026, 2, 1, 8, 30, 0, 0, time.UTC)
	container := &image.Manifest{
		Created: created.Add(time.Minute), ToolVersion: "test", Kernel: "6.18.0", Arch: "amd64", Host: "node1",
		Job: image.Job{MainPID: 2, Argv: []string{"apptainer", "exec", "-B", "/scratch:/data", "img.sif", "python3", "train.py"}, Cwd: "/work"},
		Processes: []image.ProcessRef{
			{PID: 2, PPID: 1, Comm: "starter", Core: image.CoreName(2), Pages: image.PagesName(2)},
			{PID: 9, PPID: 2, Comm: "python3", Core: image.CoreName(9), Pages: image.PagesName(9)},
		},
		Container: &image.Container{
			Runtime: "apptainer", Version: "apptainer version 1.4.5",
			Argv:       []string{"apptainer", "exec", "-B", "/scratch:/data", "img.sif", "python3", "train.py"},
			Dir:        "/work",
			Subcommand: "exec", ImageArg: 4,
			Image:      image.ContainerImage{Path: "/work/img.sif", Size: 1 << 20, MTime: mtime, Digest: "sha256:abc123"},
			Binds:      []image.Bind{{Source: "/scratch", Destination: "/data"}},
			Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.UserNamespace}},
			Mounts: []specs.Mount{
				{Destination: "/", Type: "overlay", Source: "overlay", Options: []string{"ro"}},
				{Destination: "/data", Type: "ext4", Source: "/dev/vda", Options: []string{"rw", "root=/scratch"}},
			},
			RuntimePID: 2,
		},
	}
	writeGeneration(t, dir, container)

	tests := []struct {
		name string
		args []string
		want []string
		not  []string
	}{
		{name: "newest", args: []string{"--dir", dir}, want: []string{
			"generation 2", "apptainer exec -B /scratch:/data img.sif python3 train.py",
			"processes (2)", "python3", "runtime    apptainer (apptainer version 1.4.5)",
			"subcommand exec", "/work/img.sif", "1.0 MiB", "sha256:abc123", "/scratch -> /data",
			"namespaces mount, user", "mounts     2", "root=/scratch", "checksums  ok",
		}},
		{name: "named plain generation", args: []string{"--ckpt-dir", dir, "1"}, want: []string{
			"generation 1", "./app -n 4", "uid/gid    1001/1001", "container  none (a plain job)", "cgroup v2",
		}, not: []string{"runtime "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runInspect(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out, n) {
					t.Errorf("output has %q:\n%s", n, out)
				}
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		out, err := runInspect(t, "--dir", dir, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var m image.Manifest
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("not a manifest: %v\n%s", err, out)
		}
		if m.Generation != 2 || m.Container == nil || m.Container.Image.Digest != "sha256:abc123" || len(m.Files) != 2 {
			t.Errorf("manifest %+v", m)
		}
	})

	t.Run("damaged named generation is shown", func(t *testing.T) {
		core := filepath.Join(dir, image.GenName(2), image.CoreName(9))
		if err := os.Chmod(core, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(core, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := runInspect(t, "--dir", dir, "2")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "checksums  BAD") {
			t.Errorf("damage not reported:\n%s", out)
		}
		// The default then falls back to the newest good generation.
		out, err = runInspect(t, "--dir", dir)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "generation 1") {
			t.Errorf("default did not fall back to generation 1:\n%s", out)
		}
	})

	for _, bad := range [][]string{{"--dir", dir, "x"}, {"--dir", dir, "0"}, {"--dir", dir, "1", "2"}, {"--dir", dir, "7"}, {"--dir", filepath.Join(dir, "none")}} {
		if _, err := runInspect(t, bad...); err == nil {
			t.Errorf("inspect %q: no error", bad)
		}
	}
}
