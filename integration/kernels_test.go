package integration

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// The kernel matrix boots the kernels clusters run (Debian's 5.10, 6.1 and
// 6.12, from scripts/fetch-kernels.sh) under qemu with software emulation,
// from an initramfs holding a static busybox, the static ckpt-apptainer and
// static suite programs, and runs the end-to-end scenario there as root and
// as an unprivileged user, with a cgroup v2 job cgroup and with ptrace
// alone, for a multi-process and a multi-threaded job (testdata/kernels/
// init.sh). CKPT_TEST_KERNELS names the kernels ("5.10,6.1" or "all");
// without it the matrix is skipped.

// kernelNames are the kernels fetch-kernels.sh knows.
var kernelNames = []string{"5.10", "6.1", "6.12"}

// kernelScenarios are the runs of init.sh, each a job that checks itself.
var kernelScenarios = []string{"root-v2-tree3", "user-v2-threads", "root-none-threads", "user-none-tree3", "user-v2-timers",
	"user-v2-incr", "root-v2-incr-mem"}

// memScenarios run testdata/mem.c (16 MiB, 300 steps) instead of a suite
// program.
var memScenarios = map[string]bool{"root-v2-incr-mem": true}

// softDirtyScenarios take incremental checkpoints: Debian's kernels track
// soft-dirty bits, so their periodic checkpoints after the first two on a
// supervisor must find unchanged pages by them.
var softDirtyScenarios = map[string]bool{"user-v2-incr": true, "root-v2-incr-mem": true}

// kernelBootTimeout bounds one guest from boot to power-off.
const kernelBootTimeout = 12 * time.Minute

func TestKernelMatrix(t *testing.T) {
	want := os.Getenv("CKPT_TEST_KERNELS")
	if want == "" {
		t.Skip("CKPT_TEST_KERNELS is not set (make test and make test-kernels set it)")
	}
	names := kernelNames
	if want != "all" {
		names = strings.Split(want, ",")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found: run scripts/install-deps.sh")
	}
	initrd := buildGuest(t)
	cache := os.Getenv("CKPT_TEST_CACHE_DIR")
	if cache == "" {
		cache = "/var/cache/ckpt-apptainer-test"
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			vmlinuz := filepath.Join(cache, "kernels", name, "vmlinuz")
			if _, err := os.Stat(vmlinuz); err != nil {
				t.Fatalf("kernel %s: %v: run scripts/fetch-kernels.sh %s", name, err, name)
			}
			res := bootGuest(t, qemu, vmlinuz, initrd)
			checkGuest(t, res)
		})
	}
}

// buildGuest makes the guest's initramfs and returns its path.
func buildGuest(t *testing.T) string {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox not found: run scripts/install-deps.sh")
	}
	if dynamic, err := hasInterpreter(busybox); err != nil || dynamic {
		t.Fatalf("%s is not a static program (%v): install busybox-static", busybox, err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(busybox, filepath.Join(root, "bin", "busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile("testdata/kernels/init.sh", filepath.Join(root, "init"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/tmp:/bin/sh\nckpt:x:1000:1000:ckpt:/tmp:/bin/sh\n",
		"etc/group":  "root:x:0:\nckpt:x:1000:\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(root, "bin")
	goBuild := exec.Command("go", "build", "-o", filepath.Join(bin, "ckpt-apptainer"), "../cmd/ckpt-apptainer")
	goBuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	builds := []*exec.Cmd{
		goBuild,
		exec.Command("gcc", "-O2", "-static", "-o", filepath.Join(bin, "tree3"), "testdata/suite/tree3.c"),
		exec.Command("gcc", "-O2", "-static", "-pthread", "-o", filepath.Join(bin, "thread_masks"), "testdata/suite/thread_masks.c"),
		exec.Command("gcc", "-O2", "-static", "-pthread", "-o", filepath.Join(bin, "posix_timer"), "testdata/suite/posix_timer.c", "-lrt"),
		exec.Command("gcc", "-O2", "-static", "-o", filepath.Join(bin, "runas"), "testdata/kernels/runas.c"),
		exec.Command("gcc", "-O2", "-static", "-o", filepath.Join(bin, "mem"), "testdata/mem.c"),
	}
	for _, c := range builds {
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c.Args, " "), err, out)
		}
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	out, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var list bytes.Buffer
	err = filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintln(&list, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cpio := exec.Command(busybox, "cpio", "-o", "-H", "newc")
	cpio.Dir, cpio.Stdin, cpio.Stdout = root, &list, out
	var errOut bytes.Buffer
	cpio.Stderr = &errOut
	if err := cpio.Run(); err != nil {
		t.Fatalf("cpio: %v: %s", err, errOut.String())
	}
	return initrd
}

// guestResult is what a guest reported on its second serial port.
type guestResult struct {
	kernel  string
	results map[string]string            // scenario: "ok" or "FAIL why"
	files   map[string]map[string][]byte // scenario: file name: content
	checks  map[string]string            // who: check's exit status
	done    bool
	console []byte // the kernel's console, for failures
}

// bootGuest runs the guest to its power-off and reads its report.
func bootGuest(t *testing.T, qemu, vmlinuz, initrd string) *guestResult {
	t.Helper()
	dir := t.TempDir()
	console, report := filepath.Join(dir, "console.log"), filepath.Join(dir, "report.log")
	ctx, cancel := context.WithTimeout(context.Background(), kernelBootTimeout)
	defer cancel()
	// /dev/kvm here is nested PVM, which qemu's KVM mode cannot use;
	// software emulation with every CPU feature boots every kernel.
	cmd := exec.CommandContext(ctx, qemu, "-accel", "tcg", "-cpu", "max", "-m", "1536", "-smp", "2",
		"-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "file:"+console, "-serial", "file:"+report,
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 rdinit=/init quiet")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	con, _ := os.ReadFile(console)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("guest still running after %v\n%s", kernelBootTimeout, tail(con, 40))
	}
	if err != nil {
		t.Fatalf("qemu: %v\n%s\n%s", err, out, tail(con, 40))
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	res := parseGuestReport(data)
	res.console = con
	t.Logf("kernel %s: guest ran %v", res.kernel, time.Since(start).Round(time.Second))
	return res
}

// parseGuestReport reads init.sh's report.
func parseGuestReport(data []byte) *guestResult {
	res := &guestResult{results: map[string]string{}, files: map[string]map[string][]byte{}, checks: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var inName, inFile string
	var body bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		if inFile != "" {
			if line == "END "+inName+" "+inFile {
				if res.files[inName] == nil {
					res.files[inName] = map[string][]byte{}
				}
				res.files[inName][filepath.Base(inFile)] = append([]byte(nil), body.Bytes()...)
				inFile = ""
				continue
			}
			body.WriteString(line + "\n")
			continue
		}
		f := strings.SplitN(line, " ", 4)
		switch {
		case f[0] == "KERNEL" && len(f) > 1:
			res.kernel = f[1]
		case f[0] == "RESULT" && len(f) > 2:
			res.results[f[1]] = strings.Join(f[2:], " ")
		case f[0] == "BEGIN" && len(f) == 3:
			inName, inFile = f[1], f[2]
			body.Reset()
		case f[0] == "CHECK" && len(f) == 3:
			res.checks[f[1]] = f[2]
		case f[0] == "DONE":
			res.done = true
		}
	}
	return res
}

// checkGuest checks every scenario's outcome and job log, and check's
// report against the kernel's version.
func checkGuest(t *testing.T, res *guestResult) {
	t.Helper()
	if !res.done {
		t.Errorf("the guest did not finish its run\n%s", tail(res.console, 40))
	}
	for _, name := range kernelScenarios {
		got, ok := res.results[name]
		files := res.files[name]
		switch {
		case !ok:
			t.Errorf("%s: no result", name)
			continue
		case got != "ok":
			t.Errorf("%s: %s\n%s", name, got, scenarioFiles(files))
			continue
		}
		var err error
		if memScenarios[name] {
			err = checkSequence(files["job.log"], 1, 300, parseMemLine)
		} else {
			_, err = checkSuiteLog(files["job.log"])
		}
		if err != nil {
			t.Errorf("%s: job log: %v\n%s", name, err, scenarioFiles(files))
		}
		// Each restart resumed a checkpoint: the logs say so.
		for _, f := range []string{"restart1.out", "restart2.out"} {
			if !bytes.Contains(files[f], []byte("restored generation")) {
				t.Errorf("%s: %s does not report a restore:\n%s", name, f, files[f])
			}
		}
		if softDirtyScenarios[name] && !bytes.Contains(files["launch.out"], []byte("by soft-dirty bits")) {
			t.Errorf("%s: no incremental checkpoint found unchanged pages by their soft-dirty bits:\n%s", name, files["launch.out"])
		}
	}
	for _, who := range []string{"root", "user"} {
		if res.checks[who] != "0" {
			t.Errorf("check as %s exited %s: %s", who, res.checks[who], res.files["check"]["check-"+who+".err"])
			continue
		}
		checkReportMatchesKernel(t, who, res.kernel, res.files["check"]["check-"+who+".json"])
	}
}

// checkReportMatchesKernel compares `check --json` with what a mainline
// kernel of that version has (Debian's are mainline plus fixes).
func checkReportMatchesKernel(t *testing.T, who, release string, data []byte) {
	t.Helper()
	var rep struct {
		Kernel         string `json:"kernel"`
		Checkpointable bool   `json:"checkpointable"`
		Features       []struct {
			Name      kernel.Feature `json:"name"`
			Available bool           `json:"available"`
			Detail    string         `json:"detail"`
		} `json:"features"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Errorf("check --json as %s: %v\n%s", who, err, data)
		return
	}
	if rep.Kernel != release || !rep.Checkpointable {
		t.Errorf("check as %s: kernel %q checkpointable %v; want %q and true", who, rep.Kernel, rep.Checkpointable, release)
	}
	var have []string
	for _, f := range rep.Features {
		if f.Available {
			have = append(have, string(f.Name))
		}
		if want, known := kernel.MainlineHas(f.Name, release); known && want != f.Available {
			t.Errorf("check as %s on %s: %s available %v, want %v (since %s): %s", who, release, f.Name, f.Available,
				want, kernel.Describe(f.Name).Since, f.Detail)
		}
	}
	sort.Strings(have)
	t.Logf("%s as %s: %s", release, who, strings.Join(have, " "))
}

// scenarioFiles prints a failed scenario's files.
func scenarioFiles(files map[string][]byte) string {
	var b strings.Builder
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "--- %s ---\n%s\n", n, tail(files[n], 30))
	}
	return b.String()
}

// tail returns the last n lines of data.
func tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// hasInterpreter says whether the ELF program at path is dynamically
// linked: it names a program interpreter.
func hasInterpreter(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}
