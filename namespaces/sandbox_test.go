package namespaces

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/tinyelf"
)

// Environment variables that make the test binary play another role.
const (
	envSupervisor = "CKPT_NS_TEST_SUPERVISOR" // start a sandbox running sleep, print its pid, block
	envUnpriv     = "CKPT_NS_TEST_UNPRIV"     // already running as the unprivileged user
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == InitArg {
		InitMain()
	}
	if os.Getenv(envSupervisor) != "" {
		supervisorMain()
	}
	os.Exit(m.Run())
}

// supervisorMain is a supervisor that can be SIGKILLed by a test.
func supervisorMain() {
	sb, err := Start(Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	hostPID, _, err := sb.Run([]string{"sleep", "1000"}, []string{"PATH=/usr/bin:/bin"}, "/")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(hostPID)
	select {}
}

// pauseStub is a static program that loops on pause(2).
func pauseStub() []byte {
	return tinyelf.Build([]byte{
		0xb8, 34, 0, 0, 0, // mov eax, SYS_pause
		0x0f, 0x05, // syscall
		0xeb, 0xf7, // jmp back to the mov
	})
}

var jobEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}

// startWithOutput starts a sandbox whose stdout goes to a file it returns.
func startWithOutput(t *testing.T, opts Options) (*Sandbox, *os.File) {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	opts.Stdout = out
	sb, err := Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { sb.Kill(); sb.Wait() })
	return sb, out
}

// runScript runs sh -c script in a new sandbox and returns its output and status.
func runScript(t *testing.T, opts Options, script string) (string, ExitStatus, int) {
	t.Helper()
	sb, out := startWithOutput(t, opts)
	_, nsPID, err := sb.Run([]string{"/bin/sh", "-c", script}, jobEnv, "/")
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	st, err := sb.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b), st, nsPID
}

// statusField returns one field of a /proc/pid/status text.
func statusField(status, name string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func pidMax(t *testing.T) int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSandboxJobView(t *testing.T) {
	script := `echo "pid $$"
cat /proc/self/status
echo "uidmap $(cat /proc/self/uid_map)"
echo "gidmap $(cat /proc/self/gid_map)"
echo "init $(tr '\0' ' ' </proc/1/cmdline)"
echo "procs $(cd /proc && echo [0-9]*)"
echo "initthreads $(cd /proc/1/task && echo *)"
echo "sid $(cut -d' ' -f6 /proc/self/stat)"`
	out, st, nsPID := runScript(t, Options{}, script)
	if st != (ExitStatus{}) {
		t.Fatalf("status %+v, want 0; output:\n%s", st, out)
	}
	t.Logf("job output:\n%s", out)
	vals := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			vals[k] = strings.TrimSpace(v)
		}
	}
	if vals["pid"] != "2" || nsPID != 2 {
		t.Errorf("job pid: shell says %q, Run says %d; want 2", vals["pid"], nsPID)
	}
	// Root keeps root's capabilities inside the job's user namespace;
	// anyone else has none.
	full := statusField(out, "CapBnd")
	for _, f := range []string{"CapEff", "CapPrm", "CapInh", "CapAmb"} {
		want := "0000000000000000"
		if os.Getuid() == 0 && (f == "CapEff" || f == "CapPrm") {
			want = full
		}
		if v := statusField(out, f); v != want {
			t.Errorf("job %s = %q, want %q", f, v, want)
		}
	}
	uid, gid := os.Getuid(), os.Getgid()
	if want := fmt.Sprintf("%d %d 1", uid, uid); strings.Join(strings.Fields(vals["uidmap"]), " ") != want {
		t.Errorf("uid_map %q, want %q", vals["uidmap"], want)
	}
	if want := fmt.Sprintf("%d %d 1", gid, gid); strings.Join(strings.Fields(vals["gidmap"]), " ") != want {
		t.Errorf("gid_map %q, want %q", vals["gidmap"], want)
	}
	if ids := strings.Fields(statusField(out, "Uid")); len(ids) == 0 || ids[0] != strconv.Itoa(uid) {
		t.Errorf("job Uid %v, want %d", ids, uid)
	}
	if !strings.Contains(vals["init"], InitArg) {
		t.Errorf("pid 1 runs %q, want the init mode", vals["init"])
	}
	// Only init (1), the shell (2) and the shell's short-lived children.
	for _, p := range strings.Fields(vals["procs"]) {
		if n, _ := strconv.Atoi(p); n < 1 || n > 10 {
			t.Errorf("/proc shows pid %s, which is not a sandbox process; all: %s", p, vals["procs"])
		}
	}
	// Init's own threads sit at the top of the PID range, away from the job's.
	low := pidMax(t) - initThreadReserve
	for _, tid := range strings.Fields(vals["initthreads"]) {
		if n, _ := strconv.Atoi(tid); n != 1 && n <= low {
			t.Errorf("init thread %d is below the reserve %d", n, low)
		}
	}
	if vals["sid"] != "1" {
		t.Errorf("job session %q, want init's (1)", vals["sid"])
	}
}

func TestSandboxExitStatus(t *testing.T) {
	tests := []struct {
		name   string
		script string
		want   ExitStatus
	}{
		{"zero", "true", ExitStatus{}},
		{"exit 3", "exit 3", ExitStatus{Code: 3}},
		{"kill -9", "kill -9 $$", ExitStatus{Code: 137, Signal: syscall.SIGKILL}},
		{"kill -SEGV", "kill -SEGV $$", ExitStatus{Code: 128 + 11, Signal: syscall.SIGSEGV}},
		{"orphan left running", "sleep 1000 & exit 5", ExitStatus{Code: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, st, _ := runScript(t, Options{}, tt.script)
			if st != tt.want {
				t.Errorf("status %+v, want %+v; output:\n%s", st, tt.want, out)
			}
		})
	}
}

// TestSandboxOutliveMain: with OutliveMain the job goes on after its main
// process exits 0, as long as the processes it left run (an instance's
// daemon), and ends 0 with the last of them; a main process that fails
// still ends the job at once.
func TestSandboxOutliveMain(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		want    ExitStatus
		atLeast time.Duration
		atMost  time.Duration
	}{
		{"orphans run on", "(sleep 1; echo orphan done) & exit 0", ExitStatus{}, time.Second, 20 * time.Second},
		{"orphan's status is not the job's", "(sleep 0.5; exit 7) & exit 0", ExitStatus{}, 500 * time.Millisecond, 20 * time.Second},
		{"failed main ends the job", "sleep 1000 & exit 4", ExitStatus{Code: 4}, 0, 10 * time.Second},
		{"no orphans", "exit 0", ExitStatus{}, 0, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			out, st, _ := runScript(t, Options{OutliveMain: true}, tt.script)
			took := time.Since(start)
			if st != tt.want {
				t.Errorf("status %+v, want %+v; output:\n%s", st, tt.want, out)
			}
			if took < tt.atLeast || took > tt.atMost {
				t.Errorf("the job took %v, want between %v and %v; output:\n%s", took, tt.atLeast, tt.atMost, out)
			}
			if strings.Contains(tt.script, "echo orphan done") && !strings.Contains(out, "orphan done") {
				t.Errorf("the orphan did not finish:\n%s", out)
			}
		})
	}
}

func TestSandboxRunErrors(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		dir  string
		want string
	}{
		{"missing relative", []string{"./no-such-app"}, "/", "sandbox: exec ./no-such-app: no such file or directory"},
		{"missing in PATH", []string{"no-such-app-xyz"}, "/", "sandbox: exec no-such-app-xyz: executable file not found in $PATH"},
		{"not executable", []string{"/etc/passwd"}, "/", "sandbox: exec /etc/passwd: permission denied"},
		{"bad dir", []string{"/bin/true"}, "/no/such/dir", "sandbox: exec /bin/true: working directory /no/such/dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, _ := startWithOutput(t, Options{})
			_, _, err := sb.Run(tt.argv, jobEnv, tt.dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run error %v, want %q", err, tt.want)
			}
			// The sandbox is still usable after a failed start.
			if _, _, err := sb.Run([]string{"sh", "-c", "exit 4"}, jobEnv, "/"); err != nil {
				t.Fatalf("Run after failure: %v", err)
			}
			if st, err := sb.Wait(); err != nil || st.Code != 4 {
				t.Fatalf("Wait = %+v, %v; want code 4", st, err)
			}
		})
	}
}

func TestSandboxSpawnStub(t *testing.T) {
	sb, _ := startWithOutput(t, Options{})
	hostPID, err := sb.SpawnStub(pauseStub(), 7, 500)
	if err != nil {
		t.Fatalf("SpawnStub: %v", err)
	}
	// The counter was left at 500: the next task of the namespace gets
	// the first pid above it, not 8.
	if _, nsPID, err := sb.Run([]string{"/bin/true"}, nil, ""); err != nil || nsPID != 501 {
		t.Errorf("Run after SpawnStub(..., 7, 500) = pid %d, %v; want pid 501", nsPID, err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", hostPID))
	if err != nil {
		t.Fatal(err)
	}
	status := string(b)
	if f := strings.Fields(statusField(status, "NSpid")); len(f) != 2 || f[1] != "7" {
		t.Errorf("stub NSpid %v, want host pid and 7", f)
	}
	want := fmt.Sprintf("%016x", CapMask(StubCaps()))
	for _, f := range []string{"CapEff", "CapPrm", "CapAmb"} {
		w := want
		if os.Getuid() == 0 && f != "CapAmb" {
			w = statusField(status, "CapBnd") // root's full set
		}
		if v := statusField(status, f); v != w {
			t.Errorf("stub %s = %s, want %s", f, v, w)
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", hostPID))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, fd := range fds {
		names = append(names, fd.Name())
	}
	if strings.Join(names, ",") != "0,1,2" {
		t.Errorf("stub fds %v, want 0,1,2", names)
	}
	if _, err := sb.SpawnStub(pauseStub(), 7, 0); err == nil || !strings.Contains(err.Error(), "pid 7 is in use") {
		t.Errorf("second SpawnStub at pid 7: %v, want pid in use", err)
	}
	if err := sb.Kill(); err != nil {
		t.Fatal(err)
	}
	st, err := sb.Wait()
	if err != nil || st.Signal != syscall.SIGKILL || st.Code != 137 {
		t.Errorf("Wait after Kill = %+v, %v; want SIGKILL", st, err)
	}
	waitGone(t, hostPID)
}

func TestSandboxStubIsMain(t *testing.T) {
	sb, _ := startWithOutput(t, Options{})
	hostPID, err := sb.SpawnStub(pauseStub(), 300, 0)
	if err != nil {
		t.Fatalf("SpawnStub: %v", err)
	}
	if err := unix.Kill(hostPID, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	st, err := sb.Wait()
	if err != nil || st.Signal != syscall.SIGUSR1 || st.Code != 128+int(syscall.SIGUSR1) {
		t.Errorf("Wait = %+v, %v; want SIGUSR1", st, err)
	}
}

// waitGone waits until host pid is no more.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if err := unix.Kill(pid, 0); err == unix.ESRCH {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("pid %d still exists", pid)
}

func readUptime(t *testing.T, s string) float64 {
	t.Helper()
	f := strings.Fields(s)
	if len(f) == 0 {
		t.Fatalf("no uptime in %q", s)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSandboxTimeNamespace(t *testing.T) {
	tests := []struct {
		name       string
		mono, boot time.Duration
	}{
		{"plus 1000h", 1000 * time.Hour, 1000 * time.Hour},
		{"negative monotonic", -1500 * time.Millisecond, 90 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, out := startWithOutput(t, Options{TimeNamespace: true, MonotonicOffset: tt.mono, BoottimeOffset: tt.boot})
			hostPID, _, err := sb.Run([]string{"sh", "-c", "cat /proc/uptime; exec sleep 1000"}, jobEnv, "/")
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			var text string
			for i := 0; i < 100 && text == ""; i++ {
				time.Sleep(20 * time.Millisecond)
				b, _ := os.ReadFile(out.Name())
				text = string(b)
			}
			hostUp, err := os.ReadFile("/proc/uptime")
			if err != nil {
				t.Fatal(err)
			}
			if d := readUptime(t, text) - readUptime(t, string(hostUp)) - tt.boot.Seconds(); d < -5 || d > 5 {
				t.Errorf("job uptime %s is off the host's plus %v by %.1fs", strings.TrimSpace(text), tt.boot, d)
			}

			mono, boot, err := JobClocks(hostPID)
			if err != nil {
				t.Fatalf("JobClocks: %v", err)
			}
			var hm, hb unix.Timespec
			unix.ClockGettime(unix.CLOCK_MONOTONIC, &hm)
			unix.ClockGettime(unix.CLOCK_BOOTTIME, &hb)
			if d := mono - time.Duration(hm.Nano()) - tt.mono; d.Abs() > time.Second {
				t.Errorf("job monotonic off by %v", d)
			}
			if d := boot - time.Duration(hb.Nano()) - tt.boot; d.Abs() > time.Second {
				t.Errorf("job boottime off by %v", d)
			}

			if err := sb.ForwardSignal(syscall.SIGTERM); err != nil {
				t.Fatalf("ForwardSignal: %v", err)
			}
			st, err := sb.Wait()
			if err != nil || st.Signal != syscall.SIGTERM || st.Code != 143 {
				t.Errorf("Wait = %+v, %v; want SIGTERM", st, err)
			}
		})
	}
}

func TestSandboxNoTimeNamespace(t *testing.T) {
	sb, _ := startWithOutput(t, Options{})
	hostPID, _, err := sb.Run([]string{"sleep", "1000"}, jobEnv, "/")
	if err != nil {
		t.Fatal(err)
	}
	mono, _, err := JobClocks(hostPID)
	if err != nil {
		t.Fatalf("JobClocks: %v", err)
	}
	var hm unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &hm)
	if d := mono - time.Duration(hm.Nano()); d.Abs() > time.Second {
		t.Errorf("job monotonic differs from the host's by %v without a time namespace", d)
	}
}

// A signal sent to init from outside (a batch system signalling every
// process of a job step) neither ends init nor reaches the job; the
// supervisor's forwarded signal does.
func TestSandboxInitDropsOutsideSignals(t *testing.T) {
	sb, _ := startWithOutput(t, Options{})
	_, _, err := sb.Run([]string{"sh", "-c", `trap "exit 7" HUP; trap "exit 8" TERM; echo ready; while :; do sleep 0.05; done`}, jobEnv, "/")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let the shell install its traps
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGHUP, unix.SIGUSR1, unix.SIGINT} {
		if err := unix.Kill(sb.InitPID(), sig); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := unix.Kill(sb.InitPID(), 0); err != nil {
		t.Fatalf("init ended on a signal from outside: %v", err)
	}
	if err := sb.ForwardSignal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	st, err := sb.Wait()
	if err != nil || st.Code != 7 {
		t.Errorf("Wait = %+v, %v; want exit 7 from the HUP trap (a TERM sent to init must not have reached the job)", st, err)
	}
}

func TestSandboxDiesWithSupervisor(t *testing.T) {
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envSupervisor+"=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read job pid: %v", err)
	}
	jobPID, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("supervisor said %q", line)
	}
	if err := unix.Kill(jobPID, 0); err != nil {
		t.Fatalf("job not running: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitGone(t, jobPID)
}

func TestSandboxKillBeforeRun(t *testing.T) {
	sb, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	sb.Kill()
	st, err := sb.Wait()
	if err != nil || st.Signal != syscall.SIGKILL {
		t.Errorf("Wait = %+v, %v; want SIGKILL", st, err)
	}
	if _, _, err := sb.Run([]string{"true"}, jobEnv, "/"); err == nil {
		t.Error("Run on a dead sandbox succeeded")
	}
}

// TestUnprivileged runs this package's sandbox tests again as nobody when
// the tests run as root, so the unprivileged path is always covered.
func TestUnprivileged(t *testing.T) {
	if os.Getenv(envUnpriv) != "" {
		t.Skip("already unprivileged")
	}
	if os.Getuid() != 0 {
		t.Skip("not root: the other tests already run unprivileged")
	}
	// t.TempDir's parent is private to root; nobody must reach the binary.
	dir, err := os.MkdirTemp("", "ckpt-ns-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "namespaces.test")
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()

	cmd := exec.Command(bin, "-test.run=^TestSandbox|^TestNamespaces|^TestMounts|^TestPreInit", "-test.v")
	cmd.Dir = "/"
	cmd.Env = []string{envUnpriv + "=1", "PATH=/usr/bin:/bin", "TMPDIR=/tmp", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("sandbox tests as nobody: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestSandboxJobView") {
		t.Fatal("TestSandboxJobView did not pass as nobody")
	}
}

// TestSandboxInitDiesAtStart makes init fail before it can report anything
// (a configuration without the kernel's features): Start must return the
// failure instead of waiting for a ready message that never comes.
func TestSandboxInitDiesAtStart(t *testing.T) {
	errOut, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errOut.Close()
	done := make(chan error, 1)
	go func() {
		sb, err := start(Options{Stderr: errOut}, func(c *initConfig) { c.Kernel = nil })
		if err == nil {
			sb.Kill()
			sb.Wait()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "init exited with status 1") {
			t.Errorf("Start = %v, want init's exit reported", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Start still waiting 20 s after init died")
	}
	b, _ := os.ReadFile(errOut.Name())
	if !strings.Contains(string(b), "no kernel features") {
		t.Errorf("init's stderr %q does not say why it stopped", b)
	}
}
