package apptainer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

func TestCompareMounts(t *testing.T) {
	base := []specs.Mount{
		{Destination: "/", Type: "overlay", Source: "overlay", Options: []string{"rw", "nodev", "relatime", "ro", "lowerdir=/var/lib/apptainer/mnt/session/overlay-lowerdir:/var/lib/apptainer/mnt/session/rootfs"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "tmpfs", Options: []string{"rw", "size=24684096k"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "tmpfs", Options: []string{"rw", "size=24684096k"}},
		{Destination: "/data", Type: "ext4", Source: "/dev/vda", Options: []string{"rw", "nosuid", "root=/scratch/data"}},
		{Destination: "/img", Type: "squashfs", Source: "/dev/loop3", Options: []string{"ro"}},
		{Destination: "/opt/app", Type: "fuse.squashfuse_ll", Source: "squashfuse_ll", Options: []string{"ro", "user_id=1001", "fd=5"}},
	}
	clone := func(edit func(ms []specs.Mount) []specs.Mount) []specs.Mount {
		out := make([]specs.Mount, len(base))
		for i, m := range base {
			m.Options = append([]string(nil), m.Options...)
			out[i] = m
		}
		return edit(out)
	}
	tests := []struct {
		name    string
		current []specs.Mount
		want    []string
	}{
		{name: "same", current: clone(func(ms []specs.Mount) []specs.Mount { return ms })},
		{name: "volatile parts differ", current: clone(func(ms []specs.Mount) []specs.Mount {
			ms[0].Options[4] = "lowerdir=/usr/local/var/apptainer/mnt/session/overlay-lowerdir:/usr/local/var/apptainer/mnt/session/rootfs"
			ms[1].Options[1] = "size=65536k"
			ms[4].Source = "/dev/loop7"
			ms[5].Options[2] = "fd=9"
			return ms
		})},
		{name: "stub bound in", current: append(clone(func(ms []specs.Mount) []specs.Mount { return ms }),
			specs.Mount{Destination: "/.stub", Type: "ext4", Source: "/dev/vda", Options: []string{"root=/proc/123/fd/7"}}),
			want: []string{"/.stub: new (ext4 /dev/vda root=/proc/self/fd/*)"}},
		{name: "bind gone", current: clone(func(ms []specs.Mount) []specs.Mount { return append(ms[:3], ms[4:]...) }),
			want: []string{"/data: gone (was ext4 /dev/vda root=/scratch/data)"}},
		{name: "bind changed", current: clone(func(ms []specs.Mount) []specs.Mount {
			ms[3].Options = []string{"ro", "nosuid", "root=/scratch/other"}
			return ms
		}), want: []string{"/data: options lost root=/scratch/data,rw, gained ro,root=/scratch/other"}},
		{name: "type and source", current: clone(func(ms []specs.Mount) []specs.Mount {
			ms[4].Type, ms[4].Source = "fuse.squashfuse_ll", "squashfuse_ll"
			return ms
		}), want: []string{"/img: type squashfs -> fuse.squashfuse_ll", "/img: source /dev/loop* -> squashfuse_ll"}},
		{name: "stacked mount gone", current: clone(func(ms []specs.Mount) []specs.Mount { return append(ms[:2], ms[3:]...) }),
			want: []string{"/dev/shm (stacked mount 2): gone (was tmpfs tmpfs)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CompareMounts(base, tt.current)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// requireApptainer skips the test when apptainer (or what it needs) is
// missing, unless CKPT_REQUIRE_APPTAINER=1 makes that a failure.
func requireApptainer(t *testing.T, why string, err error) {
	t.Helper()
	if os.Getenv("CKPT_REQUIRE_APPTAINER") == "1" {
		t.Fatalf("%s: %v", why, err)
	}
	t.Skipf("%s: %v (set CKPT_REQUIRE_APPTAINER=1 to make this a failure)", why, err)
}

// buildBusyboxSIF builds a minimal SIF image holding busybox.
func buildBusyboxSIF(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("apptainer"); err != nil {
		requireApptainer(t, "apptainer not found", err)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		requireApptainer(t, "busybox not found", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "r", "bin")
	must(t, os.MkdirAll(bin, 0o755))
	b, err := os.ReadFile(busybox)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755))
	for _, l := range []string{"sh", "sleep", "cat"} {
		must(t, os.Symlink("busybox", filepath.Join(bin, l)))
	}
	sif := filepath.Join(dir, "x.sif")
	if out, err := exec.Command("apptainer", "-s", "build", "-F", sif, filepath.Join(dir, "r")).CombinedOutput(); err != nil {
		requireApptainer(t, "apptainer build: "+string(out), err)
	}
	return sif
}

// containerMounts starts `apptainer exec` with opts on sif, reads the mount
// table of the application inside with namespaces.Mounts, and stops it.
// The container reports its pid through dir, bound at the same place in
// every run so that the tables compare equal.
func containerMounts(t *testing.T, sif, dir string, opts ...string) []specs.Mount {
	t.Helper()
	pidFile := filepath.Join(dir, "pid")
	os.Remove(pidFile)
	argv := []string{"-s", "exec"}
	if os.Geteuid() == 0 {
		// Root without CAP_SYS_RESOURCE (these VMs) cannot use the
		// setuid flow; a user namespace works everywhere.
		argv = append(argv, "--userns")
	}
	argv = append(argv, "-B", dir+":/ckpt-test")
	argv = append(argv, opts...)
	argv = append(argv, sif, "sh", "-c", "echo $$ > /ckpt-test/pid.tmp && mv /ckpt-test/pid.tmp /ckpt-test/pid && exec sleep 60")
	cmd := exec.Command("apptainer", argv...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	defer func() {
		// Apptainer ends with its application (killed below) and stops its
		// squashfuse_ll; a SIGKILL would leave that daemon behind.
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(pidFile)
		if err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			must(t, err)
			ms, err := namespaces.Mounts(pid)
			must(t, err)
			if err := exec.Command("kill", strconv.Itoa(pid)).Run(); err != nil {
				t.Logf("kill %d: %v", pid, err)
			}
			return ms
		}
		if time.Now().After(deadline) {
			requireApptainer(t, "container did not start: apptainer "+strings.Join(argv, " ")+": "+out.String(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCompareMountsRealContainers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containers")
	}
	sif := buildBusyboxSIF(t)
	dir := t.TempDir()
	first := containerMounts(t, sif, dir)
	second := containerMounts(t, sif, dir)
	if len(first) < 3 {
		t.Fatalf("implausible mount table: %+v", first)
	}
	if diff := CompareMounts(first, second); len(diff) != 0 {
		t.Errorf("two runs of the same container differ:\n%s", strings.Join(diff, "\n"))
	}
	extra := t.TempDir()
	third := containerMounts(t, sif, dir, "--bind", extra+":/data")
	diff := CompareMounts(first, third)
	if len(diff) != 1 || !strings.HasPrefix(diff[0], "/data: new (") || !strings.Contains(diff[0], "root="+extra) {
		t.Errorf("an extra --bind shows as:\n%s", strings.Join(diff, "\n"))
	}
	if back := CompareMounts(third, first); len(back) != 1 || !strings.HasPrefix(back[0], "/data: gone") {
		t.Errorf("a missing --bind shows as:\n%s", strings.Join(back, "\n"))
	}
}

func TestNewRecordRealImage(t *testing.T) {
	sif := buildBusyboxSIF(t)
	env := os.Environ()
	cmd, err := Parse([]string{"apptainer", "exec", "--containall", filepath.Base(sif), "sleep", "1"}, env)
	must(t, err)
	rec, err := NewRecord(cmd, env, filepath.Dir(sif))
	must(t, err)
	out, err := exec.Command("sha256sum", sif).Output()
	must(t, err)
	if want := "sha256:" + strings.Fields(string(out))[0]; rec.Image.Digest != want || rec.Image.Path != sif {
		t.Errorf("image %+v, want path %s digest %s", rec.Image, sif, want)
	}
	if !strings.HasPrefix(rec.Version, "apptainer version ") {
		t.Errorf("version %q", rec.Version)
	}
	if !cmd.PIDNamespace {
		t.Error("--containall should give the container a PID namespace of its own")
	}
}
