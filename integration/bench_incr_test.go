package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// benchIncrResult is one tool's periodic checkpoints of one job: a full
// one, then one after 5% of the job's pages changed.
type benchIncrResult struct {
	tool string
	mib  int
	// full and incr are the two checkpoints' wall time, the time the job
	// was stopped and the bytes written.
	full, incr benchPeriodic
	// restart is from starting the restart of the second checkpoint to the
	// job's next tick, with a cold page cache; 0 when not measured.
	restart time.Duration
	notes   []string
}

// benchPeriodic is one checkpoint that lets the job run on.
type benchPeriodic struct {
	wall, stopped time.Duration
	written       int64
}

// BenchmarkIncremental takes a periodic checkpoint of benchmem, changes 5%
// of its pages, and takes another: with ckpt-apptainer --incremental, and
// with CRIU's pre-dump and --track-mem where the kernel tracks soft-dirty
// bits (else CRIU's second dump is a full one, as it would be). It prints
// a table; no figure makes it fail.
func BenchmarkIncremental(b *testing.B) {
	e, why := benchSetup(b)
	if why != "" {
		fmt.Printf("BenchmarkIncremental skipped: %s\n", why)
		b.Skip(why)
	}
	sizes, err := benchSizes()
	if err != nil {
		b.Fatal(err)
	}
	var results []*benchIncrResult
	var skipped []string
	for _, mib := range sizes {
		if why := benchRoomFor(e.dir, mib); why != "" {
			skipped = append(skipped, fmt.Sprintf("%d MiB skipped: %s", mib, why))
			continue
		}
		for _, tool := range []struct {
			name    string
			measure func(*benchEnv, int) (*benchIncrResult, error)
		}{{"ckpt-apptainer", benchIncrApptainer(false)}, {"ckpt-apptainer --precopy", benchIncrApptainer(true)}, {"criu", benchIncrCRIU}} {
			b.Run(fmt.Sprintf("%dMiB/%s", mib, strings.ReplaceAll(tool.name, " --", "-")), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					r, err := tool.measure(e, mib)
					if err != nil {
						b.Fatalf("%s, %d MiB: %v", tool.name, mib, err)
					}
					results = append(results, r)
					b.ReportMetric(r.incr.wall.Seconds(), "incr-ckpt-s")
					b.ReportMetric(benchMiB(r.incr.written), "incr-MiB")
				}
			})
		}
	}
	benchPrintIncrTable(results, skipped)
}

// benchDirty asks benchmem (the job writing log) to change 5% of its pages
// and waits until it has.
func benchDirty(log string, alive func() bool) error {
	pid := benchJobPID(log)
	if pid == 0 {
		return fmt.Errorf("no benchmem process writing %s", log)
	}
	tick, _, err := benchTick(log)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		return fmt.Errorf("ask benchmem %d to change its pages: %w", pid, err)
	}
	// The tick after the signal was taken has changed them.
	return benchWaitTick(log, tick+2, benchFillTimeout, alive)
}

// benchJobPID finds the benchmem process whose command line names log.
func benchJobPID(log string) int {
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) >= 3 && filepath.Base(args[0]) == "benchmem" && args[2] == log {
			return pid
		}
	}
	return 0
}

// benchIncrApptainer measures ckpt-apptainer --incremental, with or
// without --precopy.
func benchIncrApptainer(precopy bool) func(*benchEnv, int) (*benchIncrResult, error) {
	return func(e *benchEnv, mib int) (*benchIncrResult, error) { return benchIncrApptainerRun(e, mib, precopy) }
}

func benchIncrApptainerRun(e *benchEnv, mib int, precopy bool) (*benchIncrResult, error) {
	d, cleanup, err := benchMeasureDir(e, "incr", mib)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &benchIncrResult{tool: "ckpt-apptainer", mib: mib}
	flags := []string{"--incremental"}
	if precopy {
		r.tool += " --precopy"
		flags = append(flags, "--precopy")
	}
	log, ckptDir := filepath.Join(d, "job.log"), filepath.Join(d, "ckpt")
	argv := append(append([]string{e.bin, "launch"}, flags...), "--ckpt-dir", ckptDir, "--", e.benchmem, strconv.Itoa(mib), log)
	sup, err := benchStart(filepath.Join(d, "launch.out"), true, argv...)
	if err != nil {
		return nil, err
	}
	defer sup.kill()
	alive := func() bool { return !sup.exited() }
	if err := benchWaitTick(log, 2, benchFillTimeout, alive); err != nil {
		return nil, fmt.Errorf("launch: %w\n%s", err, benchReadOut(d, "launch.out"))
	}
	periodic := func() (benchPeriodic, error) {
		run, err := benchCommand(benchCkptTimeout, e.bin, "checkpoint", "--ckpt-dir", ckptDir, "--json")
		if err != nil {
			return benchPeriodic{}, err
		}
		if run.code != 0 {
			return benchPeriodic{}, fmt.Errorf("checkpoint exited %d:\n%s\n%s", run.code, run.out, benchReadOut(d, "launch.out"))
		}
		var c benchCkptResult
		if err := json.Unmarshal([]byte(run.out), &c); err != nil {
			return benchPeriodic{}, fmt.Errorf("checkpoint --json printed %q: %w", run.out, err)
		}
		return benchPeriodic{wall: run.wall, stopped: time.Duration(c.StoppedNs), written: c.Bytes}, nil
	}
	if r.full, err = periodic(); err != nil {
		return nil, err
	}
	if err := benchDirty(log, alive); err != nil {
		return nil, err
	}
	if r.incr, err = periodic(); err != nil {
		return nil, err
	}
	sup.kill()
	benchKillUnder(d, benchGoneGrace)

	_, size, err := benchTick(log)
	if err != nil {
		return nil, err
	}
	restart, _, rs, err := benchRestart(e, d, ckptDir, log, size, mib)
	if err != nil {
		return nil, err
	}
	rs.kill()
	r.restart = restart
	return r, nil
}

func benchIncrCRIU(e *benchEnv, mib int) (*benchIncrResult, error) {
	d, cleanup, err := benchMeasureDir(e, "criu-incr", mib)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &benchIncrResult{tool: "criu", mib: mib}
	log := filepath.Join(d, "job.log")
	job, err := benchStart(filepath.Join(d, "job.out"), true, e.benchmem, strconv.Itoa(mib), log)
	if err != nil {
		return nil, err
	}
	defer job.kill()
	alive := func() bool { return !job.exited() }
	if err := benchWaitTick(log, 2, benchFillTimeout, alive); err != nil {
		return nil, fmt.Errorf("job: %w\n%s", err, benchReadOut(d, "job.out"))
	}
	tracked := exec.Command(e.criu, "check", "--feature", "mem_dirty_track").Run() == nil
	if !tracked {
		r.notes = append(r.notes, "no soft-dirty tracking on this kernel: pre-dump/--track-mem unavailable, both dumps are full ones")
	}
	dump := func(dir, prev string) (benchPeriodic, error) {
		if err := os.Mkdir(filepath.Join(d, dir), 0o700); err != nil {
			return benchPeriodic{}, err
		}
		args := []string{"dump", "-t", strconv.Itoa(job.pid()), "-D", filepath.Join(d, dir), "--shell-job",
			"--leave-running", "-o", "dump.log"}
		if tracked {
			args = append(args, "--track-mem")
			if prev != "" {
				args = append(args, "--prev-images-dir", "../"+prev)
			}
		}
		run, err := benchCommand(benchCkptTimeout, append([]string{e.criu}, args...)...)
		if err != nil {
			return benchPeriodic{}, err
		}
		if run.code != 0 {
			return benchPeriodic{}, fmt.Errorf("criu dump exited %d:\n%s\n%s", run.code, run.out, benchTail(filepath.Join(d, dir, "dump.log")))
		}
		sync := benchTimeSync()
		size, err := benchDiskUsage(filepath.Join(d, dir))
		// --leave-running: the job is stopped for the whole dump.
		return benchPeriodic{wall: run.wall + sync, stopped: run.wall, written: size}, err
	}
	if r.full, err = dump("full", ""); err != nil {
		return nil, err
	}
	if err := benchDirty(log, alive); err != nil {
		return nil, err
	}
	if r.incr, err = dump("incr", "full"); err != nil {
		return nil, err
	}
	return r, nil
}

func benchPrintIncrTable(results []*benchIncrResult, skipped []string) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nPeriodic checkpoints of benchmem: a full one, then one after 5%% of the pages changed, one run each\n")
	fmt.Fprintf(&sb, "%-26s %7s %8s %9s %9s %8s %9s %9s %8s %8s %9s %10s\n", "tool", "job MiB",
		"full s", "stopped s", "full MiB", "incr s", "stopped s", "incr MiB", "x bytes", "x time", "x stopped", "restart s")
	for _, r := range results {
		restart := "-"
		if r.restart > 0 {
			restart = fmt.Sprintf("%.2f", r.restart.Seconds())
		}
		fmt.Fprintf(&sb, "%-26s %7d %8.2f %9.2f %9.0f %8.2f %9.2f %9.1f %8.3f %8.2f %9.2f %10s\n", r.tool, r.mib,
			r.full.wall.Seconds(), r.full.stopped.Seconds(), benchMiB(r.full.written),
			r.incr.wall.Seconds(), r.incr.stopped.Seconds(), benchMiB(r.incr.written),
			float64(r.incr.written)/float64(max(1, r.full.written)), r.incr.wall.Seconds()/max(1e-9, r.full.wall.Seconds()),
			r.incr.stopped.Seconds()/max(1e-9, r.incr.wall.Seconds()), restart)
	}
	for _, r := range results {
		for _, n := range r.notes {
			fmt.Fprintf(&sb, "note: %s, %d MiB: %s\n", r.tool, r.mib, n)
		}
	}
	for _, s := range skipped {
		fmt.Fprintf(&sb, "note: %s\n", s)
	}
	sb.WriteString(`full s / incr s: wall time of "checkpoint --json" (the job runs on; data fsynced) / "criu dump --leave-running" plus
  a sync(2). MiB: page data written (ckpt-apptainer's page_bytes) / du of CRIU's images directory.
x bytes, x time: the second checkpoint's figure over the first's; x stopped: the second's stop over its wall time
  (with --precopy the job runs while its memory is copied, and is stopped for what it wrote meanwhile).
restart s: ckpt-apptainer restarting the second (incremental) generation, which reads the first one's page data too,
  with a cold page cache, to the job's next tick.
`)
	fmt.Print(sb.String())
}
