package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Limits of the benchmark's waits: generous, as the machine may be busy,
// but every wait has one.
const (
	benchFillTimeout    = 3 * time.Minute // allocate and fill the job's memory
	benchCkptTimeout    = 5 * time.Minute
	benchRestoreTimeout = 5 * time.Minute
	benchExitTimeout    = 15 * time.Second // supervisor exit after checkpoint --kill
	// benchGoneGrace is how long a job may outlive its supervisor: the
	// kernel kills a PID namespace with its init at once.
	benchGoneGrace = 5 * time.Second
)

// benchSizesEnv overrides the job sizes, in MiB, comma-separated (for a
// quick run: CKPT_BENCH_SIZES=64,256).
const benchSizesEnv = "CKPT_BENCH_SIZES"

var benchDefaultSizes = []int{1024, 4096, 16384}

// benchResult is one tool checkpointing and restarting one job size.
type benchResult struct {
	tool string
	mib  int
	// ckpt is the wall time of the checkpoint command; stopped how long the
	// job could not run because of it.
	ckpt, stopped time.Duration
	// sync is how long a sync(2) right after the checkpoint took: image
	// data the tool left to the page cache.
	sync  time.Duration
	image int64 // bytes on disk
	// restart runs from starting the restart command to the first new tick
	// in the job's log.
	restart time.Duration
	// ckptPeak and restorePeak are the tool's peak resident memory.
	ckptPeak, restorePeak int64
	notes                 []string
}

// benchEnv is what every measurement needs.
type benchEnv struct {
	bin      string // ckpt-apptainer
	criu     string
	benchmem string
	dir      string // private scratch directory, removed at the end
}

// benchTool is one checkpointer under measurement.
type benchTool struct {
	name    string
	measure func(e *benchEnv, mib int) (*benchResult, error)
}

var benchTools = []benchTool{
	{"ckpt-apptainer", benchCkptApptainer},
	{"criu", benchCRIU},
}

// BenchmarkCheckpointRestart checkpoints and restarts the same memory-heavy
// job with ckpt-apptainer and with CRIU, and prints one table of both. It
// reports figures only; no time makes it fail.
func BenchmarkCheckpointRestart(b *testing.B) {
	e, why := benchSetup(b)
	if why != "" {
		// Printed too: make bench runs without -v, which hides skip reasons.
		fmt.Printf("BenchmarkCheckpointRestart skipped: %s\n", why)
		b.Skip(why)
	}
	sizes, err := benchSizes()
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu      sync.Mutex
		results []*benchResult
		skipped []string
	)
	loadBefore := benchLoad()
	for _, mib := range sizes {
		if why := benchRoomFor(e.dir, mib); why != "" {
			skipped = append(skipped, fmt.Sprintf("%d MiB skipped: %s", mib, why))
			continue
		}
		for _, tool := range benchTools {
			b.Run(fmt.Sprintf("%dMiB/%s", mib, tool.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					r, err := tool.measure(e, mib)
					if err != nil {
						b.Fatalf("%s, %d MiB: %v", tool.name, mib, err)
					}
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
					b.ReportMetric(r.ckpt.Seconds(), "ckpt-s")
					b.ReportMetric(r.stopped.Seconds(), "stopped-s")
					b.ReportMetric(benchMiB(r.image), "image-MiB")
					b.ReportMetric(r.restart.Seconds(), "restart-s")
					b.ReportMetric(benchMiB(r.ckptPeak), "ckpt-peak-MiB")
					b.ReportMetric(benchMiB(r.restorePeak), "restore-peak-MiB")
				}
			})
		}
	}
	benchPrintTable(results, skipped, loadBefore, benchLoad())
}

// benchSetup checks the machine and builds the job; why says what is
// missing.
func benchSetup(b *testing.B) (*benchEnv, string) {
	if os.Geteuid() != 0 {
		return nil, "not root: CRIU needs root, and the page cache is dropped before each restart"
	}
	criu, err := exec.LookPath("criu")
	if err != nil {
		return nil, "criu not found: nothing to compare with"
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return nil, "gcc not found: testdata/benchmem.c cannot be built"
	}
	bin := os.Getenv("CKPT_APPTAINER_BIN")
	if bin == "" {
		bin = "../bin/ckpt-apptainer"
	}
	if bin, err = filepath.Abs(bin); err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, bin + " missing: run make build"
	}
	// Short: the control socket path must fit in a sockaddr_un.
	dir, err := os.MkdirTemp("", "ckb-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		benchKillUnder(dir, 0)
		os.RemoveAll(dir)
	})
	e := &benchEnv{bin: bin, criu: criu, benchmem: filepath.Join(dir, "benchmem"), dir: dir}
	src, err := filepath.Abs("testdata/benchmem.c")
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", e.benchmem, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build benchmem: %v\n%s", err, out)
	}
	return e, ""
}

func benchSizes() ([]int, error) {
	v := os.Getenv(benchSizesEnv)
	if v == "" {
		return benchDefaultSizes, nil
	}
	var sizes []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%s=%q: want positive sizes in MiB, comma-separated", benchSizesEnv, v)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// benchRoomFor says why a job of mib MiB does not fit here, or "". The job,
// a restore holding its image in memory, and one image on disk at a time.
func benchRoomFor(dir string, mib int) string {
	need := int64(mib) << 20
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return fmt.Sprintf("statfs %s: %v", dir, err)
	}
	if free := int64(fs.Bavail) * fs.Bsize; free < need+need/4+1<<30 {
		return fmt.Sprintf("%.0f MiB free on disk for %d MiB images", benchMiB(free), mib)
	}
	avail, err := benchMemAvailable()
	if err != nil {
		return err.Error()
	}
	if avail < 2*need+need/2 {
		return fmt.Sprintf("%.0f MiB of memory available for a %d MiB job and its restore", benchMiB(avail), mib)
	}
	return ""
}

func benchMemAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no MemAvailable in /proc/meminfo")
}

// benchMeasureDir makes the private directory of one measurement; cleanup
// kills whatever mentions it and removes it.
func benchMeasureDir(e *benchEnv, tool string, mib int) (string, func(), error) {
	d, err := os.MkdirTemp(e.dir, fmt.Sprintf("%s-%d-", tool, mib))
	if err != nil {
		return "", nil, err
	}
	return d, func() {
		benchKillUnder(d, 0)
		os.RemoveAll(d)
	}, nil
}

// benchLaunch starts a supervisor (argv) whose job writes log, and waits
// for the job's second tick: its memory is filled.
func benchLaunch(d, log string, argv ...string) (*benchProc, error) {
	sup, err := benchStart(filepath.Join(d, "launch.out"), true, argv...)
	if err != nil {
		return nil, err
	}
	if err := benchWaitTick(log, 2, benchFillTimeout, func() bool { return !sup.exited() }); err != nil {
		sup.kill()
		return nil, fmt.Errorf("launch: %w\n%s", err, benchReadOut(d, "launch.out"))
	}
	return sup, nil
}

// benchFinalCheckpoint runs checkpoint --kill on the job of supervisor sup,
// watching the supervisor's peak memory.
func benchFinalCheckpoint(e *benchEnv, d string, sup *benchProc, ckptDir string) (benchRun, benchCkptResult, int64, error) {
	var c benchCkptResult
	w := benchWatchHWM(sup.pid())
	run, err := benchCommand(benchCkptTimeout, e.bin, "checkpoint", "--ckpt-dir", ckptDir, "--json", "--kill")
	last, _ := benchVmHWM(sup.pid())
	peak := max(w.done(), last)
	if err != nil {
		return run, c, peak, err
	}
	if run.code != 0 {
		return run, c, peak, fmt.Errorf("checkpoint exited %d:\n%s\n%s", run.code, run.out, benchReadOut(d, "launch.out"))
	}
	if err := json.Unmarshal([]byte(run.out), &c); err != nil {
		return run, c, peak, fmt.Errorf("checkpoint --json printed %q: %w", run.out, err)
	}
	return run, c, peak, nil
}

// benchCkptResult is what `checkpoint --json` prints.
type benchCkptResult struct {
	Generation int   `json:"generation"`
	Bytes      int64 `json:"bytes"`
	DurationNs int64 `json:"duration_ns"`
	StoppedNs  int64 `json:"stopped_ns"`
}

func benchCkptApptainer(e *benchEnv, mib int) (*benchResult, error) {
	d, cleanup, err := benchMeasureDir(e, "ckpt", mib)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &benchResult{tool: "ckpt-apptainer", mib: mib}
	log, ckptDir := filepath.Join(d, "job.log"), filepath.Join(d, "ckpt")

	sup, err := benchLaunch(d, log, e.bin, "launch", "--ckpt-dir", ckptDir, "--", e.benchmem, strconv.Itoa(mib), log)
	if err != nil {
		return nil, err
	}
	defer sup.kill()
	run, c, peak, err := benchFinalCheckpoint(e, d, sup, ckptDir)
	r.ckptPeak = peak
	if err != nil {
		return nil, err
	}
	r.ckpt, r.stopped = run.wall, time.Duration(c.StoppedNs)
	if code, ok := sup.wait(benchExitTimeout); !ok {
		r.notes = append(r.notes, fmt.Sprintf("launch supervisor still running %v after checkpoint --kill; killed it", benchExitTimeout))
		sup.kill()
	} else if code != 143 {
		r.notes = append(r.notes, fmt.Sprintf("launch supervisor exited %d after checkpoint --kill, not 143", code))
	}
	if pids := benchKillUnder(d, benchGoneGrace); len(pids) > 0 {
		r.notes = append(r.notes, fmt.Sprintf("processes %v outlived the launch supervisor; killed them", pids))
	}
	after, rs, err := benchRestartLatest(e, d, ckptDir, log, mib)
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", c.Generation, err)
	}
	defer rs.kill()
	r.sync, r.image, r.restart, r.restorePeak = after.sync, after.image, after.restart, after.restorePeak
	rs.kill()
	if pids := benchKillUnder(d, benchGoneGrace); len(pids) > 0 {
		r.notes = append(r.notes, fmt.Sprintf("processes %v outlived the restart supervisor's SIGKILL; killed them", pids))
	}
	return r, nil
}

func benchCRIU(e *benchEnv, mib int) (*benchResult, error) {
	d, cleanup, err := benchMeasureDir(e, "criu", mib)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &benchResult{tool: "criu", mib: mib}
	log, img := filepath.Join(d, "job.log"), filepath.Join(d, "img")
	if err := os.Mkdir(img, 0o700); err != nil {
		return nil, err
	}

	job, err := benchStart(filepath.Join(d, "job.out"), false, e.benchmem, strconv.Itoa(mib), log)
	if err != nil {
		return nil, err
	}
	defer job.kill()
	if err := benchWaitTick(log, 2, benchFillTimeout, func() bool { return !job.exited() }); err != nil {
		return nil, fmt.Errorf("job: %w\n%s", err, benchReadOut(d, "job.out"))
	}

	// Without --leave-running CRIU kills the job once it is dumped, as
	// checkpoint --kill does: the job is stopped for the whole dump.
	dumpLog := filepath.Join(d, "dump.log")
	run, err := benchCommand(benchCkptTimeout, e.criu, "dump", "-t", strconv.Itoa(job.pid()),
		"-D", img, "--shell-job", "-o", dumpLog)
	if err != nil {
		return nil, err
	}
	if run.code != 0 {
		return nil, fmt.Errorf("criu dump exited %d:\n%s\n%s", run.code, run.out, benchTail(dumpLog))
	}
	r.ckpt, r.stopped, r.ckptPeak = run.wall, run.wall, run.maxRSS
	// Reaped, so that its PID is free for the restore.
	if _, ok := job.wait(benchExitTimeout); !ok {
		return nil, fmt.Errorf("job %d still running after criu dump", job.pid())
	}
	r.sync = benchTimeSync()
	if r.image, err = benchDiskUsage(img); err != nil {
		return nil, err
	}

	lastTick, size, err := benchTick(log)
	if err != nil {
		return nil, err
	}
	if err := benchDropCaches(); err != nil {
		return nil, err
	}
	benchWarmMemory(mib)
	pidFile, restoreLog := filepath.Join(d, "restored.pid"), filepath.Join(d, "restore.log")
	type restoreDone struct {
		run benchRun
		err error
	}
	done := make(chan restoreDone, 1)
	start := time.Now()
	go func() {
		run, err := benchCommand(benchRestoreTimeout, e.criu, "restore", "-D", img, "--shell-job", "-d",
			"--pidfile", pidFile, "-o", restoreLog)
		done <- restoreDone{run, err}
	}()
	// The restored job is killed at the end whatever happens; its PID is the
	// one it had, and CRIU writes it to pidFile.
	defer func() {
		if pid := benchReadPid(pidFile); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	var restored *restoreDone
	alive := func() bool {
		if restored == nil {
			select {
			case rd := <-done:
				restored = &rd
			default:
				return true
			}
		}
		pid := benchReadPid(pidFile)
		return restored.err == nil && restored.run.code == 0 && pid > 0 && syscall.Kill(pid, 0) == nil
	}
	seen, line, err := benchWaitGrowth(log, size, benchRestoreTimeout, alive)
	if restored == nil {
		rd := <-done
		restored = &rd
	}
	if restored.err != nil {
		return nil, restored.err
	}
	if restored.run.code != 0 {
		return nil, fmt.Errorf("criu restore exited %d:\n%s\n%s", restored.run.code, restored.run.out, benchTail(restoreLog))
	}
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	r.restart, r.restorePeak = seen.Sub(start), restored.run.maxRSS
	if err := benchCheckNext(line, lastTick); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return r, nil
}

// benchRestart restarts the job of ckptDir, whose log had size bytes,
// with a cold page cache, and returns the time to its next tick and that
// tick's line. The caller kills the restart supervisor.
func benchRestart(e *benchEnv, d, ckptDir, log string, size int64, mib int) (time.Duration, string, *benchProc, error) {
	if err := benchDropCaches(); err != nil {
		return 0, "", nil, err
	}
	benchWarmMemory(mib)
	start := time.Now()
	rs, err := benchStart(filepath.Join(d, "restart.out"), true, e.bin, "restart", "--ckpt-dir", ckptDir)
	if err != nil {
		return 0, "", nil, err
	}
	seen, line, err := benchWaitGrowth(log, size, benchRestoreTimeout, func() bool { return !rs.exited() })
	if err != nil {
		rs.kill()
		return 0, "", nil, fmt.Errorf("restart: %w\n%s", err, benchReadOut(d, "restart.out"))
	}
	return seen.Sub(start), line, rs, nil
}

// benchAfterCheckpoint is what follows a final checkpoint: the sync(2) it
// left to do, the disk use of its generation, the cold restart to the
// job's next tick and the restart supervisor's peak memory.
type benchAfterCheckpoint struct {
	sync, restart      time.Duration
	image, restorePeak int64
}

// benchRestartLatest measures what follows the final checkpoint of the job
// writing log, whose supervisor is gone: the restart must go on at the
// tick after the last one. The caller kills the restart supervisor.
func benchRestartLatest(e *benchEnv, d, ckptDir, log string, mib int) (benchAfterCheckpoint, *benchProc, error) {
	var a benchAfterCheckpoint
	a.sync = benchTimeSync()
	gen, err := filepath.EvalSymlinks(filepath.Join(ckptDir, "latest"))
	if err != nil {
		return a, nil, err
	}
	if a.image, err = benchDiskUsage(gen); err != nil {
		return a, nil, err
	}
	lastTick, size, err := benchTick(log)
	if err != nil {
		return a, nil, err
	}
	restart, line, rs, err := benchRestart(e, d, ckptDir, log, size, mib)
	if err != nil {
		return a, nil, err
	}
	a.restart = restart
	if a.restorePeak, err = benchVmHWM(rs.pid()); err != nil {
		rs.kill()
		return a, nil, fmt.Errorf("restart supervisor: %w", err)
	}
	if err := benchCheckNext(line, lastTick); err != nil {
		rs.kill()
		return a, nil, fmt.Errorf("restart: %w", err)
	}
	return a, rs, nil
}

// benchCheckNext checks that the first line after a restart is the tick
// after the last one before it: the job went on where it was stopped.
func benchCheckNext(line string, last int) error {
	n, err := benchParseTick(line)
	if err != nil {
		return err
	}
	if n != last+1 {
		return fmt.Errorf("first tick after the restart is %d, the last before it was %d", n, last)
	}
	return nil
}

// benchTimeSync times a sync(2): the image data a tool left in the page
// cache instead of writing it out.
func benchTimeSync() time.Duration {
	start := time.Now()
	syscall.Sync()
	return time.Since(start)
}

// benchReadPid reads a PID file; 0 when there is none yet.
func benchReadPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

func benchReadOut(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return string(b)
}

// benchTail returns the end of a tool's log, for error messages.
func benchTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func benchMiB(n int64) float64 { return float64(n) / (1 << 20) }

// benchPrintTable prints the results on stdout, which go test shows
// without -v.
func benchPrintTable(results []*benchResult, skipped []string, loadBefore, loadAfter string) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nCheckpoint/restart of benchmem (random-filled memory, a tick every 100 ms), one run each\n")
	fmt.Fprintf(&sb, "%-15s %7s %9s %9s %9s %9s %11s %10s %10s\n",
		"tool", "job MiB", "ckpt s", "stopped s", "sync s", "image MiB", "restart s", "ckpt peak", "rst peak")
	for _, r := range results {
		fmt.Fprintf(&sb, "%-15s %7d %9.2f %9.2f %9.2f %9.0f %11.2f %10.1f %10.1f\n",
			r.tool, r.mib, r.ckpt.Seconds(), r.stopped.Seconds(), r.sync.Seconds(), benchMiB(r.image),
			r.restart.Seconds(), benchMiB(r.ckptPeak), benchMiB(r.restorePeak))
	}
	for _, r := range results {
		for _, n := range r.notes {
			fmt.Fprintf(&sb, "note: %s, %d MiB: %s\n", r.tool, r.mib, n)
		}
	}
	for _, s := range skipped {
		fmt.Fprintf(&sb, "note: %s\n", s)
	}
	sb.WriteString(`ckpt s: wall time of "checkpoint --json --kill" / "criu dump" (which kills the job after dumping).
stopped s: ckpt-apptainer's stopped_ns; for CRIU the whole dump time (no --leave-running: the job stays stopped until killed).
sync s: a sync(2) right after the checkpoint, i.e. image data still in the page cache (ckpt-apptainer fsyncs, CRIU does not).
image MiB: du of the generation directory / the CRIU images directory.
restart s: from starting "restart" / "criu restore -d" to the first new tick in the job's log; the page cache was dropped
  (sync; echo 3 > /proc/sys/vm/drop_caches) and twice the job's size of memory touched and freed before each restart,
  for both tools, so neither pays alone for memory the VM has to get back from its host. Includes up to 100 ms of the
  job's own sleep.
ckpt peak / rst peak MiB: ckpt-apptainer: VmHWM of the launch supervisor right after the checkpoint and of the restart
  supervisor after its job made progress; CRIU: ru_maxrss (wait4) of criu dump / criu restore.
`)
	fmt.Fprintf(&sb, "load average before %s, after %s\n", loadBefore, loadAfter)
	fmt.Print(sb.String())
}
