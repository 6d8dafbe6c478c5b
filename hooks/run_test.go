package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// shHook is a host hook running a shell script, with its output directory
// in $OUT.
func shHook(t *testing.T, dir, name, script string, timeout int) Hook {
	t.Helper()
	path := writeFile(t, dir, name, "#!/bin/sh\n"+script+"\n", 0o755)
	h := Hook{Source: "test.json"}
	h.Path, h.Args, h.Env = path, []string{name}, []string{"OUT=" + dir}
	if timeout > 0 {
		h.Timeout = &timeout
	}
	return h
}

// quietLog is a logger whose entries the test can read.
func quietLog() (logrus.FieldLogger, *logtest.Hook) {
	return logtest.NewNullLogger()
}

func testState(dir string) State {
	return State{
		ID:            "4242",
		Status:        specs.StateRunning,
		PID:           1234,
		Annotations:   map[string]string{"site": "x"},
		CheckpointDir: dir,
		Generation:    7,
		Argv:          []string{"apptainer", "exec", "img.sif", "python3", "train.py"},
		Container:     &Container{Image: "/images/img.sif", RuntimePID: 1200, AppPID: 1250},
		SlurmJobID:    "4242",
	}
}

func TestRunState(t *testing.T) {
	dir := t.TempDir()
	h := shHook(t, dir, "copy-state", `cat > "$OUT/state.json"`, 0)
	log, _ := quietLog()
	in := testState(dir)
	results, err := Run(context.Background(), log, Postcheckpoint, []Hook{h}, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].ExitCode != 0 || results[0].Err != nil {
		t.Fatalf("results %+v, want one that exited 0", results)
	}
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got State
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("stdin %q: %v", data, err)
	}
	want := in
	want.Event, want.OCIVersion, want.Bundle = Postcheckpoint, specs.Version, dir
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hook read %+v\nwant %+v", got, want)
	}
	// Field names are runtime-spec's camelCase.
	for _, key := range []string{`"ociVersion"`, `"checkpointDir"`, `"slurmJobId"`, `"appPid"`, `"runtimePid"`} {
		if !strings.Contains(string(data), key) {
			t.Errorf("state %s has no %s", data, key)
		}
	}
}

// readEnv parses an `env` dump.
func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

func TestRunEnv(t *testing.T) {
	t.Setenv("HOOKTEST_CALLER", "kept")
	t.Setenv("HOOKTEST_OVERRIDE", "caller")
	t.Setenv(EnvError, "stale")
	dir := t.TempDir()
	h := shHook(t, dir, "dump-env", `env > "$OUT/env.$CKPT_APPTAINER_EVENT"`, 0)
	h.Env = append(h.Env, "HOOKTEST_OVERRIDE=entry", "HOOKTEST_ENTRY=new", EnvGeneration+"=999")
	log, _ := quietLog()

	for _, tt := range []struct {
		event   Event
		errText string
	}{
		{Precheckpoint, ""},
		{Postcheckpoint, "dump failed"},
	} {
		s := testState(dir)
		s.Error = tt.errText
		if _, err := Run(context.Background(), log, tt.event, []Hook{h}, s); err != nil {
			t.Fatal(err)
		}
		env := readEnv(t, filepath.Join(dir, "env."+string(tt.event)))
		want := map[string]string{
			"HOOKTEST_CALLER":   "kept",
			"HOOKTEST_OVERRIDE": "entry",
			"HOOKTEST_ENTRY":    "new",
			EnvEvent:            string(tt.event),
			EnvDir:              dir,
			EnvGeneration:       "7",
			"HOME":              os.Getenv("HOME"),
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("%s: $%s = %q, want %q", tt.event, k, env[k], v)
			}
		}
		if got, ok := env[EnvError]; got != tt.errText || ok != (tt.errText != "") {
			t.Errorf("%s: $%s = %q (set: %v), want %q", tt.event, EnvError, got, ok, tt.errText)
		}
	}
}

func TestHookEnvReplacesInPlace(t *testing.T) {
	got := hookEnv([]string{"A=1", "B=2", "C=3"}, []string{"B=entry", "D=4"}, State{Event: Prerestore, Generation: 2, CheckpointDir: "/ck"})
	want := []string{"A=1", "B=entry", "C=3", "D=4", EnvEvent + "=prerestore", EnvDir + "=/ck", EnvGeneration + "=2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("hookEnv = %q\nwant %q", got, want)
	}
}

func TestRunArgv0(t *testing.T) {
	dir := t.TempDir()
	h := Hook{Source: "test.json"}
	h.Path, h.Args = "/bin/sh", []string{"my-name", "-c", `cat /proc/$$/cmdline > "$OUT/argv"`, "sh", "first"}
	h.Env = []string{"OUT=" + dir}
	log, _ := quietLog()
	if _, err := Run(context.Background(), log, Postrestore, []Hook{h}, State{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "argv"))
	if got := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00"); !reflect.DeepEqual(got, h.Args) {
		t.Errorf("hook's argv %q, want %q", got, h.Args)
	}
}

// gone waits up to 5 s for process pid to be gone (or a zombie).
func gone(pid int) bool {
	for range 500 {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && strings.HasPrefix(string(stat[i:]), ") Z") {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// readPID reads a pid a hook wrote.
func readPID(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestRunKillsProcessGroup(t *testing.T) {
	// The hook starts a background child; its pid is written before the
	// hook either hangs (and times out) or exits.
	const bg = `sleep 1000 & echo $! > "$OUT/bg"; echo started`
	tests := []struct {
		name      string
		script    string
		timeout   int
		ctxTime   time.Duration
		wantErr   []string
		wantIsErr error
	}{
		{name: "own timeout", script: bg + "; sleep 1000", timeout: 1,
			wantErr: []string{"timed out after 1s", `output: "started"`}, wantIsErr: ErrTimedOut},
		{name: "caller's deadline first", script: bg + "; sleep 1000", timeout: 100, ctxTime: 300 * time.Millisecond,
			wantErr: []string{"timed out after 0.", "the caller's deadline"}, wantIsErr: ErrTimedOut},
		{name: "exits leaving a child", script: bg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			h := shHook(t, dir, "hang", tt.script, tt.timeout)
			ctx := context.Background()
			if tt.ctxTime > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTime)
				defer cancel()
			}
			log, _ := quietLog()
			start := time.Now()
			results, err := Run(ctx, log, Precheckpoint, []Hook{h}, State{})
			elapsed := time.Since(start)
			if elapsed > time.Duration(max(tt.timeout, 1))*time.Second+outputGrace {
				t.Errorf("Run took %v", elapsed)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			} else {
				if !errors.Is(err, tt.wantIsErr) {
					t.Errorf("error %v, want one matching %v", err, tt.wantIsErr)
				}
				for _, w := range append(tt.wantErr, "precheckpoint hook "+h.Path+" (test.json)") {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Errorf("error %v does not contain %q", err, w)
					}
				}
				if len(results) != 1 || results[0].ExitCode != -1 {
					t.Errorf("results %+v, want one with exit code -1", results)
				}
			}
			if pid := readPID(t, filepath.Join(dir, "bg")); !gone(pid) {
				unix.Kill(pid, unix.SIGKILL)
				t.Errorf("the hook's background child %d still runs", pid)
			}
		})
	}
}

func TestRunFailureOutput(t *testing.T) {
	dir := t.TempDir()
	h := shHook(t, dir, "fails", `echo line1; echo oops >&2; printf 'no newline'; exit 3`, 0)
	log, entries := quietLog()
	results, err := Run(context.Background(), log, Postrestore, []Hook{h}, State{})
	if err == nil {
		t.Fatal("Run succeeded, want an error")
	}
	for _, w := range []string{"postrestore hook " + h.Path + " (test.json)", "exit status 3", `output: "line1\noops\nno newline"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	if len(results) != 1 || results[0].ExitCode != 3 || results[0].Output != "line1\noops\nno newline" {
		t.Errorf("results %+v, want exit code 3 and the output", results)
	}
	var logged []string
	for _, e := range entries.AllEntries() {
		if e.Level == logrus.InfoLevel && e.Data["source"] == "test.json" {
			logged = append(logged, e.Message)
		}
	}
	want := []string{"postrestore hook fails: line1", "postrestore hook fails: oops", "postrestore hook fails: no newline"}
	if !reflect.DeepEqual(logged, want) {
		t.Errorf("logged %q, want %q", logged, want)
	}
}

func TestRunOutputBounded(t *testing.T) {
	dir := t.TempDir()
	// 20000 numbered lines, then a failure.
	h := shHook(t, dir, "chatty", `i=0; while [ $i -lt 20000 ]; do echo "line $i"; i=$((i+1)); done; exit 1`, 0)
	log, _ := quietLog()
	results, err := Run(context.Background(), log, Postcheckpoint, []Hook{h}, State{})
	if err == nil || len(results) != 1 {
		t.Fatalf("Run: %v, %d results; want an error and one result", err, len(results))
	}
	out := results[0].Output
	if len(out) != outputTail || !strings.HasSuffix(out, "line 19999\n") {
		t.Errorf("output is %d bytes ending %q, want %d ending with the last line", len(out), out[max(0, len(out)-20):], outputTail)
	}
	if msg := err.Error(); len(msg) > errTail+200 || !strings.Contains(msg, `line 19999"`) || strings.Contains(msg, "line 19000") {
		t.Errorf("error is %d bytes, want the end of the output only: %.200s...", len(msg), msg)
	}
}

func TestRunFailurePolicy(t *testing.T) {
	tests := []struct {
		event       Event
		wantResults int
		wantLast    bool // the hook after the failing ones ran
	}{
		{Precheckpoint, 2, false},
		{Prerestore, 2, false},
		{Postcheckpoint, 4, true},
		{Postrestore, 4, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.event), func(t *testing.T) {
			dir := t.TempDir()
			hooks := []Hook{
				shHook(t, dir, "first", `touch "$OUT/ran-first"`, 0),
				shHook(t, dir, "fail1", `exit 1`, 0),
				shHook(t, dir, "fail2", `exit 2`, 0),
				shHook(t, dir, "last", `touch "$OUT/ran-last"`, 0),
			}
			log, _ := quietLog()
			results, err := Run(context.Background(), log, tt.event, hooks, State{})
			if len(results) != tt.wantResults {
				t.Errorf("%d results, want %d", len(results), tt.wantResults)
			}
			if err == nil {
				t.Fatal("Run succeeded, want an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, string(tt.event)+" hook "+hooks[1].Path+" (test.json): exit status 1") {
				t.Errorf("error %q does not name the failing hook", msg)
			}
			if got := strings.Contains(msg, hooks[2].Path); got != tt.wantLast {
				t.Errorf("error %q names the second failing hook: %v, want %v", msg, got, tt.wantLast)
			}
			if !tt.wantLast && !strings.Contains(msg, "stopped, 2 not run") {
				t.Errorf("error %q does not say that hooks were left out", msg)
			}
			if _, err := os.Stat(filepath.Join(dir, "ran-first")); err != nil {
				t.Error("the first hook did not run")
			}
			if _, err := os.Stat(filepath.Join(dir, "ran-last")); (err == nil) != tt.wantLast {
				t.Errorf("the last hook ran: %v, want %v", err == nil, tt.wantLast)
			}
		})
	}
}

func TestRunCannotStart(t *testing.T) {
	h := Hook{Source: "test.json"}
	h.Path, h.Args = "/nonexistent/hook", []string{"hook"}
	log, _ := quietLog()
	results, err := Run(context.Background(), log, Precheckpoint, []Hook{h}, State{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/hook") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v, want one naming the hook and matching os.ErrNotExist", err)
	}
	if len(results) != 1 || results[0].ExitCode != -1 {
		t.Errorf("results %+v, want one with exit code -1", results)
	}
}

func TestRunCancelledContext(t *testing.T) {
	dir := t.TempDir()
	h := shHook(t, dir, "never", `touch "$OUT/ran"`, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	log, _ := quietLog()
	results, err := Run(ctx, log, Postcheckpoint, []Hook{h, h}, State{})
	if len(results) != 0 || err == nil || !strings.Contains(err.Error(), "2 of 2 not run") || !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %d results, %v; want none and an error saying 2 of 2 hooks were not run", len(results), err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("a hook ran after the context was cancelled")
	}
	if _, err := Run(context.Background(), log, "checkpoint", nil, State{}); err == nil {
		t.Error("Run accepted an unknown event")
	}
}

func TestRunNilLog(t *testing.T) {
	h := Hook{Source: "test.json"}
	h.Path, h.Args = "/bin/sh", []string{"sh", "-c", "echo to nobody; exit 4"}
	results, err := Run(context.Background(), nil, Postrestore, []Hook{h}, State{})
	if err == nil || len(results) != 1 || results[0].ExitCode != 4 || results[0].Output != "to nobody\n" {
		t.Errorf("Run = %+v, %v; want exit code 4 and the output kept", results, err)
	}
}
