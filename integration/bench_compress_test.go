package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchCompressMiBEnv sets the job size of BenchmarkCompression, in MiB.
const benchCompressMiBEnv = "CKPT_BENCH_COMPRESS_MIB"

// benchCompressKinds are the memories BenchmarkCompression checkpoints:
// benchmem's fills, and a Python heap.
var benchCompressKinds = []string{"random", "sparse", "text", "floats", "python"}

// benchCompressResult is one final checkpoint and restart of one kind of
// memory with one codec.
type benchCompressResult struct {
	kind, codec   string
	ckpt, stopped time.Duration
	sync, restart time.Duration
	pages, onDisk int64
	ckptPeak      int64
	restorePeak   int64
	note          string
}

// BenchmarkCompression takes a final checkpoint (checkpoint --kill) of jobs
// whose memory holds random data, sparse pages, text, a field of doubles
// and a Python heap, with --compress none and zstd, and restarts each with a
// cold page cache. It prints a table; no figure makes it fail.
func BenchmarkCompression(b *testing.B) {
	e, why := benchSetup(b)
	if why != "" {
		fmt.Printf("BenchmarkCompression skipped: %s\n", why)
		b.Skip(why)
	}
	mib := 1024
	if v := os.Getenv(benchCompressMiBEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a size in MiB", benchCompressMiBEnv, v)
		}
		mib = n
	}
	if why := benchRoomFor(e.dir, 2*mib); why != "" {
		fmt.Printf("BenchmarkCompression skipped: %s\n", why)
		b.Skip(why)
	}
	python, _ := exec.LookPath("python3")
	var results []*benchCompressResult
	for _, kind := range benchCompressKinds {
		job := []string{e.benchmem, strconv.Itoa(mib), "LOG", kind}
		if kind == "python" {
			if python == "" {
				results = append(results, &benchCompressResult{kind: kind, note: "python3 not found"})
				continue
			}
			script, err := filepath.Abs("testdata/pyheap.py")
			if err != nil {
				b.Fatal(err)
			}
			job = []string{python, script, strconv.Itoa(mib), "LOG"}
		}
		for _, codec := range []string{"none", "zstd"} {
			b.Run(kind+"/"+codec, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					r, err := benchCompressOne(e, mib, kind, codec, job)
					if err != nil {
						b.Fatalf("%s, %s: %v", kind, codec, err)
					}
					results = append(results, r)
					b.ReportMetric(r.ckpt.Seconds(), "ckpt-s")
					b.ReportMetric(benchMiB(r.onDisk), "disk-MiB")
					b.ReportMetric(r.restart.Seconds(), "restart-s")
				}
			})
		}
	}
	benchPrintCompressTable(mib, results)
}

// benchCompressOne launches job (its "LOG" argument replaced by the log's
// path), takes a final checkpoint with codec and restarts it.
func benchCompressOne(e *benchEnv, mib int, kind, codec string, job []string) (*benchCompressResult, error) {
	d, cleanup, err := benchMeasureDir(e, "zstd-"+kind+"-"+codec, mib)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &benchCompressResult{kind: kind, codec: codec}
	log, ckptDir := filepath.Join(d, "job.log"), filepath.Join(d, "ckpt")
	argv := []string{e.bin, "launch", "--compress", codec, "--ckpt-dir", ckptDir, "--"}
	for _, a := range job {
		if a == "LOG" {
			a = log
		}
		argv = append(argv, a)
	}
	sup, err := benchLaunch(d, log, argv...)
	if err != nil {
		return nil, err
	}
	defer sup.kill()
	run, c, peak, err := benchFinalCheckpoint(e, d, sup, ckptDir)
	r.ckptPeak = peak
	if err != nil {
		return nil, err
	}
	r.ckpt, r.stopped, r.pages = run.wall, time.Duration(c.StoppedNs), c.Bytes
	sup.wait(benchExitTimeout)
	sup.kill()
	benchKillUnder(d, benchGoneGrace)
	after, rs, err := benchRestartLatest(e, d, ckptDir, log, mib)
	if err != nil {
		return nil, err
	}
	defer rs.kill()
	r.sync, r.onDisk, r.restart, r.restorePeak = after.sync, after.image, after.restart, after.restorePeak
	return r, nil
}

func benchPrintCompressTable(mib int, results []*benchCompressResult) {
	fmt.Printf("\nCompression: final checkpoint (checkpoint --kill) and restart of %d MiB jobs, with a cold page cache\n", mib)
	fmt.Printf("%-7s %-5s %8s %8s %7s %10s %10s %6s %9s %9s %9s\n",
		"memory", "codec", "ckpt s", "stop s", "sync s", "pages MiB", "disk MiB", "ratio", "restart s", "ckpt MiB", "rest MiB")
	for _, r := range results {
		if r.note != "" {
			fmt.Printf("%-7s %s\n", r.kind, r.note)
			continue
		}
		ratio := 0.0
		if r.onDisk > 0 {
			ratio = float64(r.pages) / float64(r.onDisk)
		}
		fmt.Printf("%-7s %-5s %8.2f %8.2f %7.2f %10.0f %10.0f %6.2f %9.2f %9.0f %9.0f\n", r.kind, r.codec,
			r.ckpt.Seconds(), r.stopped.Seconds(), r.sync.Seconds(), benchMiB(r.pages), benchMiB(r.onDisk), ratio,
			r.restart.Seconds(), benchMiB(r.ckptPeak), benchMiB(r.restorePeak))
	}
	fmt.Println("ratio: page data / disk usage of the generation; ckpt/rest MiB: supervisor peak RSS at checkpoint / restart")
}
