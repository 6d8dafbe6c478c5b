package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// suiteEntry is one program of the feature suite (testdata/suite): a small
// job that exercises one kind of kernel object slowly and checks its own
// state at every step (see testdata/suite/suite.h for its log format).
type suiteEntry struct {
	name string
	// prog is the file in testdata/suite: NAME.c is built to NAME, a .sh
	// runs with bash, a .py with pythonPath.
	prog string
	args []string // after LOG TICKS; "{port}" becomes the test's TCP port, "{dir}" the log's directory
	// tools are the commands the entry needs besides its program.
	tools []string
	// refuse, when set, lists the words of which the checkpoint error must
	// name one: the job holds something that must stay refused.
	refuse []string
	// progress is how many new progress lines make one phase of the test;
	// 8 when zero.
	progress int
	// needs is a kernel feature without which the program cannot pass
	// (its check of timer rates against CLOCK_MONOTONIC needs the clock
	// to go on across a restart): skipped where the run switched it off.
	needs kernel.Feature
}

// suiteEntries is the suite. Groups: process trees, shared memory, file
// descriptors, signals and timers, real programs, and what must be refused.
var suiteEntries = []suiteEntry{
	{name: "tree3", prog: "tree3.c"},
	{name: "zombie", prog: "zombie.c"},
	{name: "stopped", prog: "stopped.c"},
	{name: "waitblock", prog: "waitblock.c"},
	{name: "vforkexec", prog: "vforkexec.c"},
	{name: "vforkloop", prog: "vforkloop.c"},
	{name: "orphan", prog: "orphan.c"},
	{name: "subreaper", prog: "subreaper.c"},
	{name: "pdeathsig", prog: "pdeathsig.c"},
	{name: "setsid", prog: "setsid.c"},
	{name: "pgroups", prog: "pgroups.c"},
	{name: "samepids", prog: "samepids.c"},

	{name: "shm_anon", prog: "shm_anon.c"},
	{name: "memfd_shared", prog: "memfd_shared.c"},
	{name: "posix_shm", prog: "posix_shm.c"},
	{name: "shm_unlinked", prog: "shm_unlinked.c"},
	{name: "sysv_shm", prog: "sysv_shm.c"},
	{name: "sysv_sem", prog: "sysv_sem.c"},
	{name: "sysv_msg", prog: "sysv_msg.c"},
	{name: "file_map", prog: "file_map.c"},
	{name: "posix_sem", prog: "posix_sem.c"},
	{name: "node_local", prog: "nodelocal.c", args: []string{"{dir}"}},

	{name: "pipe_inflight", prog: "pipe_inflight.c"},
	{name: "fifo", prog: "fifo.c"},
	{name: "sock_stream", prog: "sock_stream.c"},
	{name: "sock_dgram", prog: "sock_dgram.c", args: []string{"dgram"}},
	{name: "sock_seqpacket", prog: "sock_dgram.c", args: []string{"seqpacket"}},
	{name: "unix_named", prog: "unix_named.c"},
	{name: "eventfd", prog: "eventfd.c"},
	{name: "epoll", prog: "epoll.c"},
	{name: "timerfd", prog: "timerfd.c", needs: kernel.TimeNamespace},
	{name: "signalfd", prog: "signalfd.c"},
	{name: "inotify", prog: "inotify.c"},
	{name: "fd_fork_shared", prog: "fd_fork_shared.c"},
	{name: "dup_offset", prog: "dup_offset.c"},
	{name: "fdflags", prog: "fdflags.c"},
	{name: "append", prog: "append.c"},
	{name: "deleted_file", prog: "deleted_file.c"},
	{name: "dirfd", prog: "dirfd.c"},
	{name: "memfd_fd", prog: "memfd_fd.c"},
	{name: "devices", prog: "devices.c"},
	{name: "pty", prog: "pty.c"},

	{name: "sigpending", prog: "sigpending.c"},
	{name: "rtsig", prog: "rtsig.c"},
	{name: "thread_masks", prog: "thread_masks.c"},
	{name: "itimer", prog: "itimer.c", needs: kernel.TimeNamespace},
	{name: "alarm", prog: "alarm.c"},
	{name: "posix_timer_signal", prog: "posix_timer.c", args: []string{"signal"}, needs: kernel.TimeNamespace},
	{name: "posix_timer_thread", prog: "posix_timer.c", args: []string{"thread"}, needs: kernel.TimeNamespace},
	{name: "nanosleep", prog: "nanosleep.c"},

	{name: "bash_gzip", prog: "pipeline.sh", tools: []string{"bash", "grep", "gzip"}},
	{name: "make_j2", prog: "make.sh", tools: []string{"bash", "make", "grep", "sleep"}, progress: 4},
	{name: "python_pool", prog: "pool.py", tools: []string{pythonPath}},
	{name: "python_shm", prog: "mp_shm.py", tools: []string{pythonPath}},
	{name: "prodcons", prog: "prodcons.c"},

	{name: "refuse_tcp", prog: "refuse.c", args: []string{"tcp", "{port}"}, refuse: []string{"tcp", "inet"}},
	{name: "refuse_udp", prog: "refuse.c", args: []string{"udp"}, refuse: []string{"udp", "inet"}},
	{name: "refuse_io_uring", prog: "refuse.c", args: []string{"io_uring"}, refuse: []string{"io_uring"}},
	{name: "refuse_userfaultfd", prog: "refuse.c", args: []string{"userfaultfd"}, refuse: []string{"userfaultfd"}},
	{name: "refuse_perf", prog: "refuse.c", args: []string{"perf"}, refuse: []string{"perf_event", "perf"}},
}

// Suite sizes: the checkpoint/restart run takes about suiteTicks steps of
// 75 ms (15 s), long enough for five phases; the plain self-check run is short.
const (
	suiteTicks      = 200
	suiteFastTicks  = 40
	suiteParallel   = 4 // jobs under the checkpointer at a time
	suiteProgsLimit = 8 // plain runs at a time: they mostly sleep
)

// suiteFlavors are the flavors the suite runs in: root and the
// unprivileged user, both with a cgroup v2 freezer, and the user with
// incremental checkpoints and pre-copies (the first checkpoint copies the
// job's memory while it runs, the checkpoint --kill is written on it, and
// the last restart reads both), and root with compressed page files.
var suiteFlavors = []string{"root-v2", "user-v2", "user-v2-incr", "root-v2-zstd"}

// otherStopFlavors are the other ways of stopping a job (the cgroup v1
// freezer, ptrace alone), and stopFlavorEntries the entries also run in
// them: the shapes where a process tree must be caught whole.
var (
	otherStopFlavors  = []string{"user-v1", "root-none"}
	stopFlavorEntries = map[string]bool{"tree3": true, "zombie": true, "stopped": true,
		"pipe_inflight": true, "sock_stream": true, "shm_anon": true, "bash_gzip": true,
		"vforkloop": true}
)

// rhel8Flavors run on the feature set of mainline 4.18 (RHEL 8's kernel),
// whatever this kernel has, and rhel8Entries in them: every fallback of a
// kernel feature is on their path (creating tasks and their PIDs, moving
// descriptors, joining namespaces, rseq, the freezer).
var (
	rhel8Flavors = []string{"user-v2-rhel8", "root-v1-rhel8"}
	rhel8Entries = map[string]bool{"tree3": true, "thread_masks": true, "pipe_inflight": true,
		"sock_stream": true, "sock_dgram": true, "fd_fork_shared": true, "memfd_fd": true,
		"sysv_shm": true, "shm_anon": true, "nanosleep": true, "bash_gzip": true, "python_pool": true}
)

// flavorsOf returns the flavors entry runs in.
func flavorsOf(entry string) []string {
	out := append([]string(nil), suiteFlavors...)
	if stopFlavorEntries[entry] {
		out = append(out, otherStopFlavors...)
	}
	if rhel8Entries[entry] {
		out = append(out, rhel8Flavors...)
	}
	return out
}

// selectedEntries returns the entries named in $CKPT_SUITE (comma
// separated), or all of them.
func selectedEntries(t *testing.T) []suiteEntry {
	t.Helper()
	sel := os.Getenv("CKPT_SUITE")
	if sel == "" {
		return suiteEntries
	}
	byName := map[string]suiteEntry{}
	for _, e := range suiteEntries {
		byName[e.name] = e
	}
	var out []suiteEntry
	for _, name := range strings.Split(sel, ",") {
		e, ok := byName[strings.TrimSpace(name)]
		if !ok {
			t.Fatalf("CKPT_SUITE names %q, which is no suite entry", name)
		}
		out = append(out, e)
	}
	return out
}

// envTicks reads a positive step count from the environment variable name.
func envTicks(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 40 {
		t.Fatalf("%s=%q: want a number of steps, at least 40", name, v)
	}
	return n
}

// TestSuitePrograms runs every suite program without the checkpointer
// ($CKPT_SUITE_FAST_TICKS steps, 40 by default): each must end with DONE,
// exit 0 and leave a log the checker accepts, or the checkpoint tests could
// not tell a bad restore from a bad program.
func TestSuitePrograms(t *testing.T) {
	bins := buildSuite(t)
	ticks := envTicks(t, "CKPT_SUITE_FAST_TICKS", suiteFastTicks)
	entries := selectedEntries(t)
	runPool(suiteProgsLimit, len(entries), func(i int) {
		entry := entries[i]
		t.Run(entry.name, func(t *testing.T) {
			entry.needTools(t)
			dir, err := os.MkdirTemp("", "ckpt-suite-plain-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cleanupSuiteJob(dir); os.RemoveAll(dir) })
			log := filepath.Join(dir, "job.log")
			port := ""
			if entry.needsPort() {
				port = echoListener(t)
			}
			code, out := runPlain(t, entry.argv(bins, log, ticks, port), suiteFinishTimeout(ticks))
			data, _ := os.ReadFile(log)
			if code == 77 {
				t.Skipf("%s", lastLine(data))
			}
			if code != 0 {
				t.Fatalf("exit %d:\n%s\n%s", code, out, logTail(data))
			}
			if _, err := checkSuiteLog(data); err != nil {
				t.Fatalf("log rejected: %v\n%s", err, logTail(data))
			}
		})
	})
}

// TestSuite runs every suite entry under the checkpointer in the root and
// the unprivileged-user flavor: launch, checkpoint, kill, restart,
// checkpoint --kill, restart, and the job must end with DONE and a log with
// every progress line exactly once. Entries that hold something that must be
// refused instead check that both checkpoint and checkpoint --kill fail with
// an error naming the pid, fd and kind, and that the job then ends normally.
// $CKPT_SUITE picks entries; $CKPT_SUITE_TICKS sets the job length.
func TestSuite(t *testing.T) {
	e := setup(t)
	bins := buildSuite(t)
	ticks := envTicks(t, "CKPT_SUITE_TICKS", suiteTicks)
	entries := selectedEntries(t)
	results := &suiteResults{m: map[string]string{}}
	type suiteCase struct {
		entry  suiteEntry
		flavor string
	}
	var cases []suiteCase
	for _, entry := range entries {
		for _, fl := range flavorsOf(entry.name) {
			cases = append(cases, suiteCase{entry, fl})
		}
	}
	// Workers rather than t.Parallel, so that -parallel (the number of
	// cores by default) does not cut the suite below suiteParallel jobs.
	runPool(suiteParallel, len(cases), func(i int) {
		c := cases[i]
		t.Run(c.entry.name+"/"+c.flavor, func(t *testing.T) {
			r := &suiteRun{t: t, entry: c.entry, ticks: ticks, bins: bins}
			defer results.record(c.entry.name, c.flavor, r)
			c.entry.needTools(t)
			if c.entry.needs != "" {
				skipWithout(t, c.entry.needs)
			}
			r.j = newJob(t, e, e.pickFlavor(t, c.flavor))
			t.Cleanup(func() { cleanupSuiteJob(r.j.dir) })
			if c.entry.refuse != nil {
				r.refused()
			} else {
				r.checkpointRestart()
			}
		})
	})
	t.Log("suite results:\n" + results.table(entries))
}

// runPool calls f(0) .. f(n-1) from at most workers goroutines at a time
// and returns when all have returned.
func runPool(workers, n int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// needTools skips the entry when a command it needs is missing.
func (e suiteEntry) needTools(t *testing.T) {
	t.Helper()
	for _, tool := range e.tools {
		if _, err := lookTool(tool); err != nil {
			skipOrFail(t, "%s needs %s: %v", e.name, tool, err)
		}
	}
}

func (e suiteEntry) needsPort() bool {
	for _, a := range e.args {
		if a == "{port}" {
			return true
		}
	}
	return false
}

// argv is the entry's command line.
func (e suiteEntry) argv(b *suiteBins, log string, ticks int, port string) []string {
	var argv []string
	switch filepath.Ext(e.prog) {
	case ".sh":
		argv = []string{bashPath(), filepath.Join(b.dir, e.prog), log, strconv.Itoa(ticks), b.dir}
	case ".py":
		argv = []string{pythonPath, filepath.Join(b.dir, e.prog), log, strconv.Itoa(ticks)}
	default:
		argv = []string{filepath.Join(b.dir, strings.TrimSuffix(e.prog, ".c")), log, strconv.Itoa(ticks)}
	}
	for _, a := range e.args {
		a = strings.ReplaceAll(a, "{port}", port)
		argv = append(argv, strings.ReplaceAll(a, "{dir}", filepath.Dir(log)))
	}
	return argv
}

// bashPath is bash's absolute path: the job may not search $PATH.
func bashPath() string {
	if p, err := exec.LookPath("bash"); err == nil {
		return p
	}
	return "/bin/bash"
}

// suiteFinishTimeout bounds a whole run of ticks steps, on a loaded machine.
func suiteFinishTimeout(ticks int) time.Duration {
	return time.Duration(ticks)*75*time.Millisecond*3 + 60*time.Second
}

// suiteResults collects one line per entry and flavor for the summary.
type suiteResults struct {
	mu sync.Mutex
	m  map[string]string // "entry/flavor" -> PASS, SKIP or FAIL: why
}

func (r *suiteResults) record(entry, flavor string, run *suiteRun) {
	var s string
	switch {
	case run.t.Skipped():
		s = "SKIP"
	case run.t.Failed():
		s = "FAIL"
		if run.why != "" {
			s += ": " + run.why
		}
	default:
		s = "PASS"
	}
	r.mu.Lock()
	r.m[entry+"/"+flavor] = s
	r.mu.Unlock()
}

// table formats the results, one entry a line.
func (r *suiteResults) table(entries []suiteEntry) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	counts := map[string]int{}
	for _, e := range entries {
		for _, fl := range flavorsOf(e.name) {
			s, ok := r.m[e.name+"/"+fl]
			if !ok {
				s = "NOT RUN"
			}
			counts[strings.SplitN(s, ":", 2)[0]]++
			if len(s) > 160 {
				s = s[:160] + "..."
			}
			b.WriteString(e.name + "\t" + fl + "\t" + s + "\n")
		}
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + " " + strconv.Itoa(counts[k]) + "  ")
	}
	return b.String()
}
