package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envFile is written by scripts/setup-test-env.sh.
const envFile = "/run/ckpt-apptainer-test.env"

// Timeouts: generous for a loaded 2-core machine, but every wait has one, so
// a hang fails the test instead of hanging the run.
const (
	startTimeout = 20 * time.Second
	ckptTimeout  = 90 * time.Second // a 1 GiB job included
	killTimeout  = 20 * time.Second
	// jobGoneTimeout is how long the job may outlive its supervisor: the
	// kernel kills a PID namespace with its init at once, so a job that is
	// still there after this escaped.
	jobGoneTimeout  = 5 * time.Second
	cliTimeout      = 90 * time.Second
	progressTimeout = 30 * time.Second // a restore included
)

// testEnv is what the end-to-end tests need from the machine.
type testEnv struct {
	bin      string // ckpt-apptainer, copied where the test user can run it
	progs    *programs
	user     string
	uid, gid int
	// Delegated parent cgroups, "" where the hierarchy is absent.
	v2Root, v2User, v1Root, v1User string
}

var (
	envOnce   sync.Once
	theEnv    *testEnv
	envReason string
	envErr    error
)

// setup returns the environment, skipping (or failing in CI) when it is
// incomplete.
func setup(t *testing.T) *testEnv {
	t.Helper()
	progs := buildPrograms(t)
	envOnce.Do(func() { theEnv, envReason, envErr = loadEnv(progs) })
	if envReason != "" {
		skipOrFail(t, "%s", envReason)
	}
	if envErr != nil {
		t.Fatalf("test environment: %v", envErr)
	}
	return theEnv
}

func loadEnv(progs *programs) (*testEnv, string, error) {
	if os.Geteuid() != 0 {
		return nil, "not root: the tests start supervisors as root and as the test user", nil
	}
	vars, err := readEnvFile(envFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, envFile + " missing: run scripts/setup-test-env.sh", nil
	}
	if err != nil {
		return nil, "", err
	}
	bin := os.Getenv("CKPT_APPTAINER_BIN")
	if bin == "" {
		bin = "../bin/ckpt-apptainer"
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, bin + " missing: run make build", nil
	}
	e := &testEnv{
		progs:  progs,
		user:   vars["CKPT_TEST_USER"],
		v2Root: vars["CKPT_TEST_V2_ROOT"],
		v2User: vars["CKPT_TEST_V2_USER"],
		v1Root: vars["CKPT_TEST_V1_ROOT"],
		v1User: vars["CKPT_TEST_V1_USER"],
	}
	if e.user == "" {
		return nil, "", fmt.Errorf("%s sets no CKPT_TEST_USER", envFile)
	}
	u, err := user.Lookup(e.user)
	if err != nil {
		return nil, "", fmt.Errorf("test user: %w", err)
	}
	e.uid, _ = strconv.Atoi(u.Uid)
	e.gid, _ = strconv.Atoi(u.Gid)
	// The test user may not be able to reach the source tree.
	e.bin = filepath.Join(progs.dir, "ckpt-apptainer")
	if err := copyFile(bin, e.bin, 0o755); err != nil {
		return nil, "", err
	}
	return e, "", nil
}

// readEnvFile reads KEY=VALUE lines, with optional shell quotes and comments.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vars[strings.TrimSpace(k)] = v
	}
	return vars, sc.Err()
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// flavor is one way of running the supervisor.
type flavor struct {
	name   string
	user   bool   // run as the unprivileged test user
	cgroup string // "v2", "v1" or "none" (--no-cgroup)
	parent string // --cgroup-parent, "" for none
	// disable is $CKPT_APPTAINER_DISABLE for the flavor's commands: the
	// "-rhel8" flavors run on what mainline 4.18 has.
	disable string
	// incremental sets $CKPT_APPTAINER_INCREMENTAL and
	// $CKPT_APPTAINER_PRECOPY: every checkpoint after the first is written
	// on the one before, and periodic ones copy the job's memory while it
	// runs before stopping it.
	incremental bool
	// compress sets $CKPT_APPTAINER_COMPRESS=zstd: page files are
	// compressed.
	compress bool
}

// allFlavors lists root and user, each with v2, v1 and no cgroup, in a fixed
// order, then the flavors with the 4.18 feature set; parent is empty where
// the hierarchy is absent.
func (e *testEnv) allFlavors() []flavor {
	return []flavor{
		{"root-v2", false, "v2", e.v2Root, "", false, false},
		{"root-v1", false, "v1", e.v1Root, "", false, false},
		{"root-none", false, "none", "", "", false, false},
		{"user-v2", true, "v2", e.v2User, "", false, false},
		{"user-v1", true, "v1", e.v1User, "", false, false},
		{"user-none", true, "none", "", "", false, false},
		// A v2 job cgroup without cgroup.freeze: stopped with ptrace.
		{"user-v2-rhel8", true, "v2", e.v2User, "rhel8", false, false},
		{"root-v1-rhel8", false, "v1", e.v1Root, "rhel8", false, false},
		// Incremental generations and pre-copies, unprivileged.
		{"user-v2-incr", true, "v2", e.v2User, "", true, false},
		// Compressed page files.
		{"root-v2-zstd", false, "v2", e.v2Root, "", false, true},
		{"user-v2-zstd", true, "v2", e.v2User, "", false, true},
	}
}

// usable says why the flavor cannot run here, or "".
func (f flavor) usable() string {
	if f.cgroup != "none" && f.parent == "" {
		return "no delegated " + f.cgroup + " cgroup on this machine"
	}
	return ""
}

// pickFlavor returns the first usable flavor named in prefs, for tests that
// run in one flavor only.
func (e *testEnv) pickFlavor(t *testing.T, prefs ...string) flavor {
	t.Helper()
	for _, name := range prefs {
		for _, f := range e.allFlavors() {
			if f.name == name && f.usable() == "" {
				return f
			}
		}
	}
	t.Skipf("none of the flavors %v is usable here", prefs)
	return flavor{}
}

// job is one checkpointed job: a private directory for its files and its
// checkpoint directory, owned by whoever runs it.
type job struct {
	t       *testing.T
	env     *testEnv
	fl      flavor
	dir     string
	ckptDir string
	nsup    int
	// extraEnv is added to the environment of every ckpt-apptainer command
	// (through env(1), which survives runuser).
	extraEnv []string
}

// newJob makes the job's directory; the test's cleanup kills whatever of the
// job is left and removes it.
func newJob(t *testing.T, e *testEnv, fl flavor) *job {
	t.Helper()
	if why := fl.usable(); why != "" {
		t.Skip(why)
	}
	// Not t.TempDir: its parent is private to root, the test user could not
	// reach the files.
	dir, err := os.MkdirTemp("", "ckpt-it-job-")
	if err != nil {
		t.Fatal(err)
	}
	if fl.user {
		err = os.Chown(dir, e.uid, e.gid)
	}
	if err != nil {
		t.Fatal(err)
	}
	j := &job{t: t, env: e, fl: fl, dir: dir, ckptDir: filepath.Join(dir, "ckpt")}
	if fl.disable != "" {
		j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_DISABLE="+fl.disable)
	}
	if fl.incremental {
		j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_INCREMENTAL=1", "CKPT_APPTAINER_PRECOPY=1")
	}
	if fl.compress {
		j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_COMPRESS=zstd")
	}
	t.Cleanup(func() {
		// The supervisors' cleanups (run before this one) killed them; their
		// jobs get a moment to go down with them.
		deadline := time.Now().Add(jobGoneTimeout)
		for len(procsMentioning(dir)) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		for _, p := range procsMentioning(dir) {
			t.Errorf("process %s of the job still running at the end of the test; killing it", p)
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
		if !t.Failed() || os.Getenv("CKPT_TEST_KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			t.Logf("job directory kept: %s", dir)
		}
	})
	return j
}

// path names a file in the job's directory.
func (j *job) path(name string) string { return filepath.Join(j.dir, name) }

// cgroupArgs are the supervisor options that select the flavor's cgroup.
func (j *job) cgroupArgs() []string {
	if j.fl.cgroup == "none" {
		return []string{"--no-cgroup"}
	}
	return []string{"--cgroup-parent", j.fl.parent}
}

// command builds the command line for ckpt-apptainer args, as the flavor's
// user. A user-flavor supervisor is first moved into the user's delegated
// cgroup, as a batch system would have placed it.
func (j *job) command(ctx context.Context, supervise bool, args ...string) *exec.Cmd {
	argv := append([]string{j.env.bin}, args...)
	if len(j.extraEnv) > 0 {
		argv = append(append([]string{"env"}, j.extraEnv...), argv...)
	}
	if !j.fl.user {
		return exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	asUser := append([]string{"runuser", "-u", j.env.user, "--"}, argv...)
	if !supervise || j.fl.cgroup == "none" {
		return exec.CommandContext(ctx, asUser[0], asUser[1:]...)
	}
	script := `echo $$ > "$1" && shift && exec "$@"`
	procs := filepath.Join(j.fl.parent, "cgroup.procs")
	return exec.CommandContext(ctx, "sh", append([]string{"-c", script, "sh", procs}, asUser...)...)
}

// cli runs a short ckpt-apptainer command (checkpoint, list) as the flavor's
// user and returns its exit status and output; a hang fails the test.
func (j *job) cli(args ...string) (int, string, string) {
	j.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := j.command(ctx, false, args...)
	cmd.Dir = j.dir
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		j.t.Fatalf("ckpt-apptainer %s did not finish in %v:\n%s%s",
			strings.Join(args, " "), cliTimeout, stdout.String(), stderr.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		j.t.Fatalf("ckpt-apptainer %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// ckptResult is the output of checkpoint --json.
type ckptResult struct {
	Generation int   `json:"generation"`
	Bytes      int64 `json:"bytes"`
	DurationNs int64 `json:"duration_ns"`
	StoppedNs  int64 `json:"stopped_ns"`
	// UnreadBytes is the memory write tracking found unchanged without
	// reading it, UnreadBy how.
	UnreadBytes int64  `json:"unread_bytes"`
	UnreadBy    string `json:"unread_by"`
}

// checkpoint asks the running supervisor for a checkpoint and waits until
// its generation is complete on disk.
func (j *job) checkpoint(extra ...string) ckptResult {
	j.t.Helper()
	args := append([]string{"checkpoint", "--ckpt-dir", j.ckptDir, "--json"}, extra...)
	code, out, errOut := j.cli(args...)
	if code != 0 {
		j.t.Fatalf("checkpoint failed (exit %d):\n%s%s", code, out, errOut)
	}
	var r ckptResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		j.t.Fatalf("checkpoint --json printed %q: %v", out, err)
	}
	if r.Generation < 1 || r.Bytes <= 0 || r.DurationNs <= 0 || r.StoppedNs <= 0 {
		j.t.Fatalf("checkpoint --json reports implausible figures: %+v", r)
	}
	if got := j.latest(); got != r.Generation {
		j.t.Fatalf("checkpoint reported generation %d, latest points to %d", r.Generation, got)
	}
	return r
}

// listEntry is one element of list --json.
type listEntry struct {
	Generation int             `json:"generation"`
	Time       string          `json:"time"`
	SizeBytes  int64           `json:"size_bytes"`
	Processes  json.RawMessage `json:"processes"`
	Valid      bool            `json:"valid"`
	Error      string          `json:"error"`
	// RestoreFailed says why a restart could not restore the generation.
	RestoreFailed string `json:"restore_failed"`
	// Branch says why the generation is on a history branch.
	Branch string `json:"branch"`
}

// list runs list --json.
func (j *job) list() []listEntry {
	j.t.Helper()
	code, out, errOut := j.cli("list", "--ckpt-dir", j.ckptDir, "--json")
	if code != 0 {
		j.t.Fatalf("list failed (exit %d):\n%s%s", code, out, errOut)
	}
	var l []listEntry
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		j.t.Fatalf("list --json printed %q: %v", out, err)
	}
	return l
}

var genName = regexp.MustCompile(`^gen-([0-9]{6})$`)

// generations lists the complete generations in the checkpoint directory.
func (j *job) generations() []int {
	ents, _ := os.ReadDir(j.ckptDir)
	var gens []int
	for _, e := range ents {
		if m := genName.FindStringSubmatch(e.Name()); m != nil && e.IsDir() {
			n, _ := strconv.Atoi(m[1])
			gens = append(gens, n)
		}
	}
	sort.Ints(gens)
	return gens
}

// latest returns the generation the latest link points to, 0 if none.
func (j *job) latest() int {
	target, err := os.Readlink(filepath.Join(j.ckptDir, "latest"))
	if err != nil {
		return 0
	}
	m := genName.FindStringSubmatch(filepath.Base(target))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// genDir is the directory of generation n.
func (j *job) genDir(n int) string {
	return filepath.Join(j.ckptDir, fmt.Sprintf("gen-%06d", n))
}

// checkList checks that list --json reports every generation on disk, and
// each of them as valid.
func (j *job) checkList() {
	j.t.Helper()
	l := j.list()
	var listed []int
	for _, e := range l {
		listed = append(listed, e.Generation)
		if !e.Valid || e.Error != "" {
			j.t.Errorf("list: generation %d invalid: %q", e.Generation, e.Error)
		}
		if e.SizeBytes <= 0 || !plausibleCount(e.Processes) {
			j.t.Errorf("list: generation %d: size %d, processes %s", e.Generation, e.SizeBytes, e.Processes)
		}
		if _, err := time.Parse(time.RFC3339Nano, e.Time); err != nil {
			j.t.Errorf("list: generation %d: time %q: %v", e.Generation, e.Time, err)
		}
	}
	sort.Ints(listed)
	if disk := j.generations(); fmt.Sprint(listed) != fmt.Sprint(disk) {
		j.t.Errorf("list reports generations %v, the directory holds %v", listed, disk)
	}
}

// plausibleCount accepts a positive number or a non-empty array.
func plausibleCount(raw json.RawMessage) bool {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n > 0
	}
	var a []json.RawMessage
	return json.Unmarshal(raw, &a) == nil && len(a) > 0
}

// lines counts the complete lines of the job's file name.
func (j *job) lines(name string) int {
	b, _ := os.ReadFile(j.path(name))
	return bytes.Count(b, []byte{'\n'})
}

// waitLines waits until the job's file name has at least n lines, failing
// early if the supervisor ends first.
func (j *job) waitLines(s *supervisor, name string, n int) {
	j.t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for j.lines(name) < n {
		if s.exited() {
			j.t.Fatalf("supervisor ended (%s) before %s reached %d lines (has %d):\n%s",
				s.status(), name, n, j.lines(name), s.output())
		}
		if time.Now().After(deadline) {
			j.t.Fatalf("%s has %d lines after %v, want %d:\n%s",
				name, j.lines(name), progressTimeout, n, s.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitGeneration waits until latest points to generation n or later.
func (j *job) waitGeneration(s *supervisor, n int) {
	j.t.Helper()
	deadline := time.Now().Add(ckptTimeout)
	for j.latest() < n {
		if s.exited() {
			j.t.Fatalf("supervisor ended (%s) before generation %d:\n%s", s.status(), n, s.output())
		}
		if time.Now().After(deadline) {
			j.t.Fatalf("no generation %d after %v (latest %d):\n%s", n, ckptTimeout, j.latest(), s.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readFile returns the job's file name.
func (j *job) readFile(name string) []byte {
	j.t.Helper()
	b, err := os.ReadFile(j.path(name))
	if err != nil {
		j.t.Fatal(err)
	}
	return b
}

// copyTree copies a directory with its owners and modes.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}
