package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pythonPath is the interpreter counter.py runs with: the system one, so the
// job does not depend on a user's shims.
const pythonPath = "/usr/bin/python3"

// programs are the test programs, built once per test binary run.
type programs struct {
	dir       string // world-readable, so the unprivileged flavor can run them
	counter   string
	avx       string
	mem       string
	gotimers  string
	counterPy string
	// netjob is testdata/netjob.py, the TCP and UDP jobs.
	netjob string
	// fakecuda stands in for the GPU helper (gpu_test.go).
	fakecuda string
}

var (
	buildDir    string // made by TestMain, removed after the run
	buildOnce   sync.Once
	builtProgs  *programs
	buildReason string // why the programs cannot be built here
	buildErr    error  // the build itself failed
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ckpt-it-bin-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		os.Exit(2)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// skipOrFail skips the test for a missing environment, except in CI, where a
// missing environment is a failure: CI must not pass by skipping everything.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and the environment is incomplete: "+format, args...)
	}
	t.Skipf(format, args...)
}

// buildPrograms compiles the test programs (once per run) and returns them.
func buildPrograms(t *testing.T) *programs {
	t.Helper()
	buildOnce.Do(func() { builtProgs, buildReason, buildErr = build(buildDir) })
	if buildReason != "" {
		skipOrFail(t, "%s", buildReason)
	}
	if buildErr != nil {
		t.Fatalf("build test programs: %v", buildErr)
	}
	return builtProgs
}

func build(dir string) (*programs, string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return nil, "gcc not found: the C test programs cannot be built", nil
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
		if _, err := os.Stat(goTool); err != nil {
			return nil, "go not found: testdata/gotimers cannot be built", nil
		}
	}
	if _, err := os.Stat(pythonPath); err != nil {
		return nil, pythonPath + " not found: counter.py cannot run", nil
	}
	p := &programs{
		dir:       dir,
		counter:   filepath.Join(dir, "counter"),
		avx:       filepath.Join(dir, "avx"),
		mem:       filepath.Join(dir, "mem"),
		gotimers:  filepath.Join(dir, "gotimers"),
		counterPy: filepath.Join(dir, "counter.py"),
		netjob:    filepath.Join(dir, "netjob.py"),
		fakecuda:  filepath.Join(dir, "fakecuda"),
	}
	cflags := []string{"-O2", "-g", "-Wall", "-Wextra", "-Werror"}
	builds := []*exec.Cmd{
		exec.Command(gcc, append(cflags, "-o", p.counter, "testdata/counter.c")...),
		exec.Command(gcc, append(cflags, "-pthread", "-o", p.avx, "testdata/avx.c")...),
		exec.Command(gcc, append(cflags, "-o", p.mem, "testdata/mem.c")...),
		// A file path, not a package path: testdata is not part of the module's
		// packages. Static, as Go binaries usually are.
		exec.Command(goTool, "build", "-o", p.gotimers, "./testdata/gotimers/main.go"),
		exec.Command(goTool, "build", "-o", p.fakecuda, "./testdata/fakecuda/main.go"),
	}
	builds[3].Env = append(os.Environ(), "CGO_ENABLED=0")
	builds[4].Env = builds[3].Env
	for _, cmd := range builds {
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
		}
	}
	for _, script := range []struct{ src, dst string }{
		{"testdata/counter.py", p.counterPy},
		{"testdata/netjob.py", p.netjob},
	} {
		src, err := os.ReadFile(script.src)
		if err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(script.dst, src, 0o755); err != nil {
			return nil, "", err
		}
	}
	return p, "", nil
}

// TestProgramsSelfCheck runs every test program on its own, without the
// checkpointer: each must finish with a log the checkers accept, and each must
// exit 1 when its state is corrupted (SIGUSR2), or the end-to-end tests could
// not tell a bad restore from a good one.
func TestProgramsSelfCheck(t *testing.T) {
	p := buildPrograms(t)
	tests := []struct {
		name  string
		argv  func(log string) []string
		check func(log []byte) error
		// corruptAfter is how long to wait for the program to be in its main
		// loop before sending SIGUSR2.
		corruptAfter time.Duration
	}{
		{"counter", func(log string) []string { return []string{p.counter, log, "40"} },
			func(b []byte) error { return checkSequence(b, 1, 40, parseCounterLine) }, 300 * time.Millisecond},
		{"python", func(log string) []string { return []string{pythonPath, p.counterPy, log, "60"} },
			func(b []byte) error { return checkSequence(b, 1, 60, parseSumLine) }, 500 * time.Millisecond},
		{"gotimers", func(log string) []string { return []string{p.gotimers, log, "80"} },
			func(b []byte) error { return checkSequence(b, 1, 80, parseGoLine) }, 300 * time.Millisecond},
		{"avx", func(log string) []string { return []string{p.avx, log, "1"} },
			func(b []byte) error { return checkAVXLog(b, 1) }, 300 * time.Millisecond},
		{"mem", func(log string) []string { return []string{p.mem, log, "64", "60"} },
			func(b []byte) error { return checkSequence(b, 1, 60, parseMemLine) }, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "log")
			code, out := runProgram(t, tt.argv(log), 0)
			if code != 0 {
				t.Fatalf("exit %d on an undisturbed run:\n%s", code, out)
			}
			b, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.check(b); err != nil {
				t.Fatalf("log of an undisturbed run rejected: %v", err)
			}

			bad := filepath.Join(t.TempDir(), "log")
			code, out = runProgram(t, tt.argv(bad), tt.corruptAfter)
			if code != 1 {
				t.Fatalf("exit %d after its state was corrupted, want 1:\n%s", code, out)
			}
		})
	}
}

// TestCounterContinuesLog checks that counter.c resumes from the last value in
// its log, which the end-to-end tests rely on to spot a lost or replayed line.
func TestCounterContinuesLog(t *testing.T) {
	p := buildPrograms(t)
	log := filepath.Join(t.TempDir(), "log")
	for _, n := range []string{"10", "25"} {
		if code, out := runProgram(t, []string{p.counter, log, n}, 0); code != 0 {
			t.Fatalf("counter to %s: exit %d:\n%s", n, code, out)
		}
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSequence(b, 1, 25, parseCounterLine); err != nil {
		t.Fatal(err)
	}
}

// runProgram runs argv, sending SIGUSR2 after corruptAfter when it is not
// zero, and returns the exit status and the output.
func runProgram(t *testing.T, argv []string, corruptAfter time.Duration) (int, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if corruptAfter > 0 {
		select {
		case <-time.After(corruptAfter):
			if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
		case <-done:
			t.Fatalf("%s ended before it could be corrupted:\n%s", argv[0], out.String())
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not finish in 60s:\n%s", argv[0], out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String()
}
