package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// suiteBins is the built suite: programs and scripts in one world-readable
// directory, so the unprivileged flavor can run them.
type suiteBins struct{ dir string }

var (
	suiteOnce  sync.Once
	suiteBuilt *suiteBins
	suiteWhy   string // why the suite cannot be built here
	suiteErr   error
)

// buildSuite compiles testdata/suite/*.c and copies its scripts, once per
// run.
func buildSuite(t *testing.T) *suiteBins {
	t.Helper()
	suiteOnce.Do(func() { suiteBuilt, suiteWhy, suiteErr = buildSuiteIn(filepath.Join(buildDir, "suite")) })
	if suiteWhy != "" {
		skipOrFail(t, "%s", suiteWhy)
	}
	if suiteErr != nil {
		t.Fatalf("build the suite programs: %v", suiteErr)
	}
	return suiteBuilt
}

func buildSuiteIn(dir string) (*suiteBins, string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return nil, "gcc not found: the suite programs cannot be built", nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, "", err
	}
	const src = "testdata/suite"
	ents, err := os.ReadDir(src)
	if err != nil {
		return nil, "", err
	}
	var cmds []*exec.Cmd
	for _, e := range ents {
		name := e.Name()
		switch filepath.Ext(name) {
		case ".c":
			out := filepath.Join(dir, strings.TrimSuffix(name, ".c"))
			cmds = append(cmds, exec.Command(gcc, "-O1", "-g", "-Wall", "-Werror", "-pthread",
				"-o", out, filepath.Join(src, name)))
		case ".sh", ".py", ".suite":
			if err := copyFile(filepath.Join(src, name), filepath.Join(dir, name), 0o755); err != nil {
				return nil, "", err
			}
		}
	}
	// Two at a time: the machine has two cores.
	errs := make(chan error, len(cmds))
	sem := make(chan struct{}, 2)
	for _, cmd := range cmds {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
				return
			}
			errs <- nil
		}()
	}
	var all []error
	for range cmds {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	if len(all) > 0 {
		return nil, "", errors.Join(all...)
	}
	return &suiteBins{dir: dir}, "", nil
}

// lookTool finds a command by absolute path or in $PATH.
func lookTool(name string) (string, error) {
	if filepath.IsAbs(name) {
		_, err := os.Stat(name)
		return name, err
	}
	return exec.LookPath(name)
}

// runPlain runs argv to completion without the checkpointer and returns its
// exit status and output.
func runPlain(t *testing.T, argv []string, timeout time.Duration) (int, string) {
	t.Helper()
	r, err := benchCommand(timeout, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return r.code, r.out
}

// echoListener listens on 127.0.0.1, outside any job, and echoes what each
// connection sends; it returns the port.
func echoListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(c, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

var ipcLine = regexp.MustCompile(`(?m)^I \S+ ipc (shm|sem|msg) ([0-9]+)$`)

// cleanupSuiteJob removes what a killed suite job may leave outside its
// directory: System V objects it logged and its POSIX shm and semaphores
// (named after the directory).
func cleanupSuiteJob(dir string) {
	data, _ := os.ReadFile(filepath.Join(dir, "job.log"))
	flags := map[string]string{"shm": "-m", "sem": "-s", "msg": "-q"}
	for _, m := range ipcLine.FindAllStringSubmatch(string(data), -1) {
		exec.Command("ipcrm", flags[m[1]], m[2]).Run()
	}
	shm, _ := filepath.Glob("/dev/shm/*" + filepath.Base(dir) + "*")
	for _, f := range shm {
		os.Remove(f)
	}
}

var seqLine = regexp.MustCompile(`^T (\S+) ([0-9]+) `)

// checkSuiteLog checks a finished suite log: every line complete and of a
// known kind, no FAIL, per tag the progress numbers 1, 2, 3... with no gap or
// repeat, and one DONE as the last line. skip is the SKIP line's reason when
// the program found the machine lacking.
func checkSuiteLog(data []byte) (skip string, err error) {
	if len(data) == 0 {
		return "", fmt.Errorf("log is empty")
	}
	if data[len(data)-1] != '\n' {
		return "", fmt.Errorf("log ends with an unterminated line %q", lastLine(data))
	}
	lines := strings.Split(string(data[:len(data)-1]), "\n")
	last := map[string]int{}
	done := 0
	for i, line := range lines {
		if done > 0 {
			return "", fmt.Errorf("line %d %q follows the DONE line", i+1, line)
		}
		switch {
		case strings.HasPrefix(line, "FAIL"):
			return "", fmt.Errorf("line %d: %s", i+1, line)
		case strings.HasPrefix(line, "SKIP "):
			return strings.TrimPrefix(line, "SKIP "), nil
		case strings.HasPrefix(line, "DONE "):
			done++
		case strings.HasPrefix(line, "I "):
		case strings.HasPrefix(line, "T "):
			m := seqLine.FindStringSubmatch(line)
			if m == nil {
				return "", fmt.Errorf("line %d %q: malformed progress line", i+1, line)
			}
			n, _ := strconv.Atoi(m[2])
			switch want := last[m[1]] + 1; {
			case n < want:
				return "", fmt.Errorf("line %d %q: %s step %d repeated (want %d)", i+1, line, m[1], n, want)
			case n > want:
				return "", fmt.Errorf("line %d %q: %s steps %d to %d missing", i+1, line, m[1], want, n-1)
			}
			last[m[1]] = n
		default:
			return "", fmt.Errorf("line %d %q: not a suite log line", i+1, line)
		}
	}
	if len(last) == 0 {
		return "", fmt.Errorf("log has no progress lines")
	}
	if done == 0 {
		return "", fmt.Errorf("log has no DONE line; it ends with %q", lines[len(lines)-1])
	}
	return "", nil
}

// logTail is the end of a job log for failure messages.
func logTail(data []byte) string {
	const keep = 25
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	from := max(0, len(lines)-keep)
	return fmt.Sprintf("--- job log, last %d of %d lines ---\n%s\n--- end of job log ---",
		len(lines)-from, len(lines), strings.Join(lines[from:], "\n"))
}

// errorLine says in one line what went wrong in out: its first line, and
// when that names no error, the first line that does (a supervisor's log
// line reduced to its message).
func errorLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	isErr := func(l string) bool {
		return strings.Contains(l, "rror") || strings.Contains(l, "not supported") ||
			strings.Contains(l, "FAIL") || strings.Contains(l, "fatal") ||
			strings.HasPrefix(strings.TrimSpace(l), "ckpt-apptainer: ")
	}
	first := strings.TrimSpace(lines[0])
	if isErr(first) {
		return first
	}
	for _, l := range lines[1:] {
		if isErr(l) {
			if _, msg, ok := strings.Cut(l, ` msg="`); ok {
				l = strings.TrimSuffix(msg, `"`)
			}
			return first + " -- " + strings.TrimSpace(l)
		}
	}
	return first
}

// outputTail is the end of what a supervisor printed.
func outputTail(s *supervisor) string {
	b, _ := os.ReadFile(s.outPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	from := max(0, len(lines)-20)
	return fmt.Sprintf("--- %s output, last %d lines ---\n%s\n--- end of %s output ---",
		s.name, len(lines)-from, strings.Join(lines[from:], "\n"), s.name)
}

// suiteRun is one entry run under the checkpointer in one flavor.
type suiteRun struct {
	t     *testing.T
	entry suiteEntry
	ticks int
	bins  *suiteBins
	j     *job
	s     *supervisor
	why   string // the first failure, for the summary
}

const suiteLog = "job.log"

func (r *suiteRun) log() []byte {
	b, _ := os.ReadFile(r.j.path(suiteLog))
	return b
}

// fatalf fails the run in stage, with the job log's tail.
func (r *suiteRun) fatalf(stage, format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if r.why == "" {
		r.why = stage + ": " + errorLine(msg)
	}
	r.t.Fatalf("%s: %s\n%s", stage, msg, logTail(r.log()))
}

func (r *suiteRun) errorf(stage, format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf(format, args...)
	if r.why == "" {
		r.why = stage + ": " + errorLine(msg)
	}
	r.t.Errorf("%s: %s", stage, msg)
}

// progressLines counts the complete progress lines of the log.
func (r *suiteRun) progressLines() (n int, fail, skip, done string) {
	for _, l := range strings.Split(string(r.log()), "\n") {
		switch {
		case strings.HasPrefix(l, "T "):
			n++
		case strings.HasPrefix(l, "FAIL"):
			fail = l
		case strings.HasPrefix(l, "SKIP "):
			skip = l
		case strings.HasPrefix(l, "DONE "):
			done = l
		}
	}
	return n, fail, skip, done
}

// suiteMinPhase is the shortest phase: entries whose processes log in
// bursts still run a while between checkpoint, kill and restart.
const suiteMinPhase = 600 * time.Millisecond

// waitProgress waits for the job to log the entry's number of new progress
// lines after stage, and at least suiteMinPhase.
func (r *suiteRun) waitProgress(stage string) {
	r.t.Helper()
	k := r.entry.progress
	if k == 0 {
		k = 8
	}
	base, _, _, _ := r.progressLines()
	start := time.Now()
	deadline := start.Add(progressTimeout)
	for {
		n, fail, skip, done := r.progressLines()
		switch {
		case fail != "":
			r.fatalf(stage, "the job reports %s\n%s", fail, outputTail(r.s))
		case skip != "":
			r.t.Skip(skip)
		case n >= base+k && time.Since(start) >= suiteMinPhase:
			return
		case done != "":
			r.fatalf(stage, "the job finished (%s) before the test was done with it; make it longer ($CKPT_SUITE_TICKS)", done)
		case r.s.exited():
			r.fatalf(stage, "supervisor ended (%s) while waiting for progress\n%s", r.s.status(), outputTail(r.s))
		case time.Now().After(deadline):
			r.fatalf(stage, "no progress: %d progress lines after %v, want %d\n%s", n, progressTimeout, base+k, outputTail(r.s))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkpoint asks for a checkpoint and fails the run with its error when
// it is refused.
func (r *suiteRun) checkpoint(stage string, extra ...string) {
	r.t.Helper()
	args := append([]string{"checkpoint", "--ckpt-dir", r.j.ckptDir, "--json"}, extra...)
	code, out, errOut := r.j.cli(args...)
	if code != 0 {
		r.fatalf(stage, "checkpoint failed (exit %d): %s%s\n%s", code, out, errOut, outputTail(r.s))
	}
}

// finish waits for the job to end with status 0 and checks its log.
func (r *suiteRun) finish() {
	r.t.Helper()
	var victims []procInfo
	if pid := r.s.pid(); pid > 0 {
		victims = descendants(pid)
	}
	timeout := suiteFinishTimeout(r.ticks)
	select {
	case <-r.s.done:
	case <-time.After(timeout):
		r.fatalf("finish", "the job did not finish in %v\n%s", timeout, outputTail(r.s))
	}
	if code := r.s.exitCode(); code != 0 {
		_, fail, _, _ := r.progressLines()
		r.fatalf("finish", "supervisor exited with %d, want 0 %s\n%s", code, fail, outputTail(r.s))
	}
	r.j.waitJobGone(victims)
	skip, err := checkSuiteLog(r.log())
	if skip != "" {
		r.t.Skip(skip)
	}
	if err != nil {
		r.fatalf("log", "%v", err)
	}
}

// checkpointRestart is the suite's story: launch, checkpoint, lose the job
// to SIGKILL, restart, checkpoint --kill, restart, and the job ends well.
func (r *suiteRun) checkpointRestart() {
	r.t.Helper()
	r.s = r.j.launch(nil, r.entry.argv(r.bins, r.j.path(suiteLog), r.ticks, "")...)
	r.waitProgress("launch")
	r.checkpoint("checkpoint #1")
	r.waitProgress("after checkpoint #1")
	r.s.kill()

	r.s = r.j.restart()
	r.waitProgress("restart #1")
	r.checkpoint("checkpoint #2 --kill", "--kill")
	if code := r.s.waitExit(ckptTimeout); code != 143 {
		r.fatalf("checkpoint #2 --kill", "supervisor exited with %d, want 143\n%s", code, outputTail(r.s))
	}
	r.j.waitJobGone(nil)

	r.s = r.j.restart()
	r.waitProgress("restart #2")
	r.finish()
}

var refuseLine = regexp.MustCompile(`(?m)^I main refuse pid=([0-9]+) fd=([0-9,]+) kind=(\S+)$`)

// refused checks that a job holding what cannot be checkpointed is refused
// twice (checkpoint, checkpoint --kill) with an error naming the pid, fd and
// kind, runs on, and ends normally.
func (r *suiteRun) refused() {
	r.t.Helper()
	port := ""
	if r.entry.needsPort() {
		port = echoListener(r.t)
	}
	r.s = r.j.launch(nil, r.entry.argv(r.bins, r.j.path(suiteLog), r.ticks, port)...)
	r.waitProgress("launch")
	m := refuseLine.FindStringSubmatch(string(r.log()))
	if m == nil {
		r.fatalf("launch", "the job logged no \"I main refuse\" line")
	}
	pids := []string{m[1]}
	if host := hostPID(r.j.dir, m[1]); host != "" {
		pids = append(pids, host)
	}
	fds := strings.Split(m[2], ",")
	namesPid := regexp.MustCompile(`(?i)\bpid[ =:]*(` + strings.Join(pids, "|") + `)\b`)
	namesFD := regexp.MustCompile(`(?i)\bfd[ =:]*(` + strings.Join(fds, "|") + `)\b`)

	for _, kill := range []bool{false, true} {
		stage, args := "checkpoint", []string{"checkpoint", "--ckpt-dir", r.j.ckptDir}
		if kill {
			stage, args = "checkpoint --kill", append(args, "--kill")
		}
		code, out, errOut := r.j.cli(args...)
		msg := out + errOut
		if code == 0 {
			r.fatalf(stage, "succeeded for a job holding %s; it must be refused:\n%s", m[3], msg)
		}
		if !namesPid.MatchString(msg) || !namesFD.MatchString(msg) || !mentionsAny(msg, r.entry.refuse) {
			r.errorf(stage, "the error does not name pid %s, fd %s and %s: %s",
				strings.Join(pids, " or "), strings.Join(fds, " or "), strings.Join(r.entry.refuse, " or "), errorLine(msg))
		}
		time.Sleep(300 * time.Millisecond)
		if r.s.exited() {
			r.fatalf(stage, "the supervisor ended (%s) after a refused checkpoint\n%s", r.s.status(), outputTail(r.s))
		}
		r.waitProgress("after refused " + stage)
	}
	if gens := r.j.generations(); len(gens) != 0 || hasTempGeneration(r.j.ckptDir) {
		r.errorf("checkpoint", "refused checkpoints left generations %v or a temporary one", gens)
	}
	r.finish()
}

func mentionsAny(s string, words []string) bool {
	s = strings.ToLower(s)
	for _, w := range words {
		if strings.Contains(s, strings.ToLower(w)) {
			return true
		}
	}
	return false
}

// hostPID maps the pid a job's process sees to its pid on the host, among
// the processes whose command line names dir; "" when none matches.
func hostPID(dir, nsPID string) string {
	for _, p := range procsMentioning(dir) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
				f := strings.Fields(v)
				if len(f) > 1 && f[len(f)-1] == nsPID {
					return f[0]
				}
			}
		}
	}
	return ""
}

// TestCheckSuiteLog checks the suite's log checker on good and broken logs:
// it is what tells a bad restore from a good one.
func TestCheckSuiteLog(t *testing.T) {
	tests := []struct {
		name, log, skip, err string
	}{
		{"good", "T main 1 a\nT c 1 b\nI main x\nT main 2 a\nT c 2 b\nDONE ok\n", "", ""},
		{"empty", "", "", "empty"},
		{"unterminated", "T main 1 a\nDONE ok", "", "unterminated"},
		{"fail", "T main 1 a\nFAIL: main: bad\n", "", "FAIL: main: bad"},
		{"repeat", "T main 1 a\nT main 2 a\nT main 2 a\nDONE ok\n", "", "repeated"},
		{"gap", "T main 1 a\nT main 3 a\nDONE ok\n", "", "2 to 2 missing"},
		{"gap in one tag", "T a 1 x\nT b 1 x\nT b 3 x\nT a 2 x\nDONE ok\n", "", "b steps 2 to 2 missing"},
		{"no done", "T main 1 a\n", "", "no DONE"},
		{"after done", "T main 1 a\nDONE ok\nT main 2 a\n", "", "follows the DONE"},
		{"two dones", "T main 1 a\nDONE ok\nDONE ok\n", "", "follows the DONE"},
		{"no progress", "DONE ok\n", "", "no progress"},
		{"stray output", "T main 1 a\nhello\nDONE ok\n", "", "not a suite log line"},
		{"skip", "SKIP no io_uring\n", "no io_uring", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skip, err := checkSuiteLog([]byte(tt.log))
			if skip != tt.skip {
				t.Errorf("skip %q, want %q", skip, tt.skip)
			}
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}
