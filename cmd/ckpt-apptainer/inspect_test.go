package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// writeGeneration commits one small generation with manifest m into the
// checkpoint directory dir. A process's core file is cores[pid] where
// there is one, a bare one with its pid and comm otherwise; a nil entry
// leaves the core file out, as a damaged generation would.
func writeGeneration(t *testing.T, dir string, m *image.Manifest, cores map[int]*image.Process) {
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
		core, ok := cores[p.PID]
		if ok && core == nil {
			continue
		}
		if !ok {
			core = &image.Process{PID: p.PID, Comm: p.Comm}
		}
		if err := w.WriteJSON(p.Core, core); err != nil {
			t.Fatal(err)
		}
		if p.Pages != "" {
			d, err := w.Create(p.Pages)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
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
	writeGeneration(t, dir, plain, nil)
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
	writeGeneration(t, dir, container, nil)

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
		var r inspectReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("not a report: %v\n%s", err, out)
		}
		m := r.Manifest
		if r.Generation != 2 || !r.Valid || m == nil || m.Container == nil || m.Container.Image.Digest != "sha256:abc123" || len(m.Files) != 4 {
			t.Errorf("report %+v", r)
		}
		if len(r.Processes) != 2 || r.Processes[1].PID != 9 || r.Processes[1].Comm != "python3" {
			t.Errorf("processes %+v", r.Processes)
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
		if !strings.Contains(out, "checksums  BAD") || !strings.Contains(out, "python3") {
			t.Errorf("damage not reported:\n%s", out)
		}
		out, err = runInspect(t, "--dir", dir, "--json", "2")
		if err != nil {
			t.Fatal(err)
		}
		var r inspectReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		if r.Valid || !strings.Contains(r.Error, "core-9.json") {
			t.Errorf("json: valid %v, error %q", r.Valid, r.Error)
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

// detailedJob writes into dir a plain job's generation 1 with the state
// inspect summarizes (memory, files, threads, limits, IPC, hooks; pid 4's
// core file is missing) and a container's generation 2, and logs hooks
// for both.
func detailedJob(t *testing.T, dir string) {
	t.Helper()
	const k = 1 << 10
	int64p := func(v int64) *int64 { return &v }
	uint64p := func(v uint64) *uint64 { return &v }
	plain := &image.Manifest{
		ToolVersion: "test", Kernel: "6.18.0", Arch: "amd64", Host: "node1",
		Job: image.Job{MainPID: 2, Argv: []string{"./app"}, Cwd: "/work"},
		Processes: []image.ProcessRef{
			{PID: 2, PPID: 1, Comm: "app", Core: image.CoreName(2)},
			{PID: 3, PPID: 2, Comm: "worker", Core: image.CoreName(3)},
			{PID: 4, PPID: 2, Comm: "lost", Core: image.CoreName(4)},
		},
		Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace, Path: "/proc/77/ns/mnt"}},
		Mounts: []specs.Mount{
			{Destination: "/", Type: "overlay", Source: "overlay", Options: []string{"rw", "lowerdir=/l"}},
			{Destination: "/proc", Type: "proc", Source: "proc"},
		},
		Cgroup: &image.Cgroup{Version: "v2", Path: "/sys/fs/cgroup/job.scope", Resources: &specs.LinuxResources{
			Memory:  &specs.LinuxMemory{Limit: int64p(4 << 30)},
			CPU:     &specs.LinuxCPU{Quota: int64p(200000), Period: uint64p(100000)},
			Pids:    &specs.LinuxPids{Limit: int64p(512)},
			Unified: map[string]string{"cpu.weight": "100"},
		}},
		IPC:        &image.SysVIPC{Shm: []image.SysVShm{{SysVPerm: image.SysVPerm{Key: 0x1234, ID: 5, Mode: 0o600}, Size: 1 << 20, Destroyed: true, Data: image.SysVShmName(5)}}},
		LocalFiles: []image.LocalFile{{File: image.FileID{Path: "/data/out.log", Size: 3 << 20}, Data: image.LocalFileName(1), Where: "local disk"}},
		GPU: &image.GPU{Driver: "580.159.04", CUDA: 13000, Processes: []image.GPUProcess{{PID: 3, LockNs: 330e6, CheckpointNs: 1200e6, HostBytes: 64 << 20,
			Devices: []image.GPUDevice{{Minor: 0, Model: "NVIDIA H200", UUID: "GPU-2f1c"}}}}},
		Hooks: []image.HookRun{{Event: "precheckpoint", Path: "/hooks/flush.sh", Args: []string{"--sync"}, Source: "/etc/ckpt/hooks.json",
			Generation: 1, Start: time.Now(), Duration: 1200 * time.Millisecond}},
	}
	app := &image.Process{PID: 2, PGID: 2, SID: 2, Comm: "app", Exe: image.FileID{Path: "/usr/bin/app"},
		Threads: []image.Thread{{TID: 2, Comm: "app", SigMask: 1 << 1}, {TID: 5, Comm: "app-io", Rseq: &image.Rseq{}}},
		VMAs: []image.VMA{
			{Start: 0x1000, End: 0x5000, Kind: image.VMAAnon},
			{Start: 0x10000, End: 0x20000, Kind: image.VMAAnon},
			// Adjacent to the one before: a page run over both is split.
			{Start: 0x20000, End: 0x21000, Kind: image.VMAFilePrivate, Name: "/usr/bin/app"},
			{Start: 0x7000_0000, End: 0x7000_2000, Kind: image.VMAVDSO},
		},
		PageRuns: []image.PageRun{{Addr: 0x1000, Pages: 2}, {Addr: 0x4000, Pages: 1}, {Addr: 0x10000, Pages: 4}, {Addr: 0x1f000, Pages: 2}},
		Files: []image.FD{
			{Num: 0, Kind: image.FDStdio}, {Num: 1, Kind: image.FDStdio, Stdio: 1}, {Num: 2, Kind: image.FDStdio, Stdio: 2},
			{Num: 3, Kind: image.FDFile, Path: "/data/in.txt", Pos: 4096, Flags: os.O_RDONLY},
			{Num: 4, Kind: image.FDFile, Path: "/data/out.log", Pos: 100, Flags: os.O_WRONLY | os.O_APPEND},
			{Num: 5, Kind: image.FDPipe, Pipe: &image.Pipe{Inode: 99, WriteEnd: true}},
			{Num: 6, Kind: image.FDTimerfd, Anon: &image.AnonFD{Timerfd: &image.Timerfd{Clock: 1}}},
			// No kind recorded: the contents say it is a memfd.
			{Num: 7, Contents: &image.FileContents{Name: "scratch", Size: 8 * k}},
		},
	}
	worker := &image.Process{PID: 3, PGID: 2, SID: 2, Comm: "worker", State: image.ProcStopped, Exe: image.FileID{Path: "/usr/bin/app"},
		Threads: []image.Thread{{TID: 3, Comm: "worker"}},
		VMAs: []image.VMA{
			{Start: 0x1000, End: 0x2000, Kind: image.VMAAnon},
			{Start: 0x40000, End: 0x42000, Kind: image.VMAAnonShared, Shmem: "0:1"},
		},
		PageRuns: []image.PageRun{{Addr: 0x1000, Pages: 1}, {Addr: 0x41000, Pages: 1}},
		Files:    []image.FD{{Num: 0, Kind: image.FDPipe, Pipe: &image.Pipe{Inode: 99, ReadEnd: true}}},
	}
	for i := range 12 {
		worker.Files = append(worker.Files, image.FD{Num: 10 + i, Kind: image.FDFile, Path: fmt.Sprintf("/data/part-%02d", i)})
	}
	writeGeneration(t, dir, plain, map[int]*image.Process{2: app, 3: worker, 4: nil})
	container := &image.Manifest{
		ToolVersion: "test", Job: image.Job{Argv: []string{"apptainer", "run", "img.sif"}},
		Processes: []image.ProcessRef{{PID: 1, Comm: "starter", Core: image.CoreName(1)}},
		Container: &image.Container{Runtime: "apptainer", Subcommand: "run"},
	}
	writeGeneration(t, dir, container, nil)
	st, err := image.OpenStore(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	err = st.AppendHookLog([]image.HookRun{
		{Event: "postcheckpoint", Path: "/hooks/notify.sh", Source: "/etc/ckpt/hooks.json", Generation: 1, Start: time.Now()},
		{Event: "prerestore", Path: "/hooks/stage.sh", Source: "/work/hooks.json", Generation: 2, Start: time.Now(), InContainer: true},
		{Event: "postrestore", Path: "/hooks/check.sh", Source: "/work/hooks.json", Generation: 1, Start: time.Now(), ExitCode: -1, Error: "timed out after 30s"},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// squeeze collapses every run of blanks in out to one space, so that
// tests need not know column widths.
func squeeze(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func TestInspectDetails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	detailedJob(t, dir)
	tests := []struct {
		name string
		gen  string
		want []string
		not  []string
	}{
		{name: "processes and threads", gen: "1", want: []string{
			"processes (3)", "PID PPID PGID SID STATE THREADS COMM EXE",
			"2 1 2 2 running 2 app /usr/bin/app", "3 2 2 2 stopped 1 worker /usr/bin/app",
			"4 2 ? ? ? ? lost (core-4.json unreadable)",
		}},
		{name: "missing core file", gen: "1", want: []string{
			"checksums BAD: generation 1: manifest.json: processes[2].core names core-4.json, which the file list does not have",
			"unreadable core-4.json: generation 1:", "pid 4 not counted: core-4.json is unreadable",
		}},
		{name: "memory by kind", gen: "1", want: []string{
			"2 anon 2 80 KiB 32 KiB", "2 file-private 1 4 KiB 4 KiB", "2 vdso 1 8 KiB 0 KiB", "2 total 4 92 KiB 36 KiB",
			"3 anon 1 4 KiB 4 KiB", "3 anon-shared 1 8 KiB 4 KiB", "3 total 2 12 KiB 8 KiB",
			"job anon 3 84 KiB 36 KiB", "job anon-shared 1 8 KiB 4 KiB", "job total 6 104 KiB 44 KiB",
		}},
		{name: "fds by kind", gen: "1", want: []string{
			"2 8 file 2, memfd 1, pipe 1, stdio 3, timerfd 1", "3 13 file 12, pipe 1",
			"job 21 file 14, memfd 1, pipe 2, stdio 3, timerfd 1",
			"files of pid 2", "3 r /data/in.txt offset 4096", "4 w,append /data/out.log offset 100",
			"/data/part-09 offset 0", "... 2 more",
		}, not: []string{"/data/part-10"}},
		{name: "gpu", gen: "1", want: []string{
			"gpu driver 580.159.04, CUDA 13.0, 1 processes", "pid 3 NVIDIA H200 GPU-2f1c (/dev/nvidia0); device state about 64.0 MiB; lock 330ms, checkpoint 1.2s",
		}},
		{name: "no gpu", gen: "2", want: []string{"gpu none"}},
		{name: "namespaces, mounts, ipc", gen: "1", want: []string{
			"sandbox namespaces (2)\npid none\nmount /proc/77/ns/mnt\n", "mounts (2)", "/ overlay overlay rw,lowerdir=/l", "/proc proc proc none\n",
			"System V IPC\n", "shm key 0x00001234 id 5, owner 0/0, mode 0600 1.0 MiB, removed (IPC_RMID), still attached",
		}},
		{name: "saved files and references", gen: "1", want: []string{
			"files 1 saved (node-local, 3.0 MiB), 1 references", "/data/out.log 3.0 MiB local disk local-1.img", "reference /usr/bin/app",
		}},
		{name: "limits", gen: "1", want: []string{
			"cgroup v2 /sys/fs/cgroup/job.scope", "memory limit 4.00 GiB",
			"cpu quota 200000us per 100000us (2.00 CPUs), weight 100", "pids limit 512",
		}},
		{name: "hooks of generation 1", gen: "1", want: []string{
			"hooks (3)", "precheckpoint /hooks/flush.sh --sync /etc/ckpt/hooks.json exit 0 1.2s",
			"postcheckpoint /hooks/notify.sh /etc/ckpt/hooks.json exit 0",
			"postrestore /hooks/check.sh /work/hooks.json failed: timed out after 30s",
		}, not: []string{"stage.sh"}},
		{name: "hooks of generation 2", gen: "2", want: []string{
			"hooks (1)", "prerestore /hooks/stage.sh (in the container) /work/hooks.json exit 0",
			"cgroup none recorded", "mounts none recorded", "sandbox namespaces none recorded",
		}, not: []string{"flush.sh", "notify.sh", "check.sh", "System V IPC", "unreadable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := runInspect(t, "--dir", dir, tt.gen)
			if err != nil {
				t.Fatal(err)
			}
			out := squeeze(raw)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, raw)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out, n) {
					t.Errorf("output has %q:\n%s", n, raw)
				}
			}
		})
	}

	t.Run("sections in order", func(t *testing.T) {
		out, err := runInspect(t, "--dir", dir, "1")
		if err != nil {
			t.Fatal(err)
		}
		at := 0
		for _, s := range []string{"generation 1", "\njob\n", "\nstats\n", "\nprocesses (", "\nmemory\n", "\nfds\n", "\nSystem V IPC",
			"\nsandbox namespaces", "\nmounts (", "\ncgroup ", "\ncontainer ", "\nhooks ("} {
			i := strings.Index(out[at:], s)
			if i < 0 {
				t.Fatalf("section %q missing or out of order:\n%s", s, out)
			}
			at += i + len(s)
		}
	})

	t.Run("json has the numbers of the text", func(t *testing.T) {
		text, err := runInspect(t, "--dir", dir, "1")
		if err != nil {
			t.Fatal(err)
		}
		text = squeeze(text)
		out, err := runInspect(t, "--dir", dir, "--json", "1")
		if err != nil {
			t.Fatal(err)
		}
		var r inspectReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		anon := r.MemoryTotal.ByKind[image.VMAAnon]
		if anon != (memoryFigures{Mappings: 3, Bytes: 84 << 10, PageBytes: 36 << 10}) || r.MemoryTotal.PageBytes != 44<<10 {
			t.Errorf("memory total %+v", r.MemoryTotal)
		}
		if r.FDsByKind[image.FDFile] != 14 || r.FDsByKind[image.FDMemfd] != 1 || len(r.Hooks) != 3 {
			t.Errorf("fds %v, hooks %+v", r.FDsByKind, r.Hooks)
		}
		if len(r.Processes) != 3 || len(r.Processes[0].Threads) != 2 || r.Processes[2].Error == "" ||
			len(r.Unreadable) != 1 || r.Unreadable[0].File != "core-4.json" {
			t.Fatalf("processes %+v, unreadable %+v", r.Processes, r.Unreadable)
		}
		th := r.Processes[0].Threads
		if th[0].TID != 2 || !slices.Equal(th[0].Blocked, []string{"SIGINT"}) || th[1].TID != 5 || !th[1].Rseq {
			t.Errorf("threads %+v", th)
		}
		if fd := r.Processes[0].FDs[3]; fd.Path != "/data/in.txt" || fd.Pos != 4096 || fd.Kind != image.FDFile {
			t.Errorf("fd 3 %+v", fd)
		}
		// Every figure of the JSON is the one the text shows.
		var rows []string
		for _, pr := range r.Processes[:2] {
			for _, row := range memoryRows(strconv.Itoa(pr.PID), pr.Memory) {
				rows = append(rows, strings.Join(row, " "))
			}
			rows = append(rows, fmt.Sprintf("%d %d %s", pr.PID, len(pr.FDs), kindCounts(pr.FDsByKind)))
		}
		for _, row := range memoryRows("job", r.MemoryTotal) {
			rows = append(rows, strings.Join(row, " "))
		}
		rows = append(rows, "job 21 "+kindCounts(r.FDsByKind))
		for _, row := range rows {
			if !strings.Contains(text, row) {
				t.Errorf("text lacks the JSON's %q:\n%s", row, text)
			}
		}
	})
}
