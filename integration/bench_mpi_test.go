package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchMPIRanks and benchMPIMiB are the MPI job of BenchmarkMPI: 4 ranks
// of MPICH's mpiring, each holding 256 MiB it checks as it goes.
const (
	benchMPIRanks = 4
	benchMPIMiB   = 256
)

// BenchmarkMPI checkpoints and restarts a 4-rank MPICH job with 256 MiB
// per rank under --net private: a periodic checkpoint (and how long the
// ranks were stopped), a final one (checkpoint --kill) and a restart to
// the ring's next step with a cold page cache. CRIU is not run: it
// restores TCP connections only as root with --tcp-established, which
// the job's connections to mpiexec need. It prints figures; none makes it
// fail.
func BenchmarkMPI(b *testing.B) {
	e, why := benchSetup(b)
	if why == "" {
		why = benchMPIMissing()
	}
	if why == "" {
		why = benchRoomFor(e.dir, benchMPIRanks*benchMPIMiB)
	}
	if why != "" {
		fmt.Printf("BenchmarkMPI skipped: %s\n", why)
		b.Skip(why)
	}
	prog := filepath.Join(e.dir, "mpiring")
	if out, err := exec.Command("mpicc.mpich", "-O2", "-o", prog, "testdata/mpiring.c").CombinedOutput(); err != nil {
		b.Fatalf("mpicc.mpich: %v\n%s", err, out)
	}
	for i := 0; i < b.N; i++ {
		r, err := benchMPIOnce(e, prog)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.periodic.Seconds(), "ckpt-s")
		b.ReportMetric(r.stopped.Seconds(), "stopped-s")
		b.ReportMetric(r.final.Seconds(), "final-s")
		b.ReportMetric(r.restart.Seconds(), "restart-s")
		fmt.Printf("\nMPI job: %d ranks (MPICH) x %d MiB, --net private\n", benchMPIRanks, benchMPIMiB)
		fmt.Printf("  %-38s %8.2f s (ranks stopped %.2f s), %.0f MiB\n", "periodic checkpoint", r.periodic.Seconds(), r.stopped.Seconds(), benchMiB(r.bytes))
		fmt.Printf("  %-38s %8.2f s\n", "final checkpoint (checkpoint --kill)", r.final.Seconds())
		fmt.Printf("  %-38s %8.2f s\n", "restart to the next step, cold cache", r.restart.Seconds())
	}
}

// benchMPIMissing says what BenchmarkMPI lacks here.
func benchMPIMissing() string {
	for _, tool := range []string{"mpicc.mpich", "mpiexec.mpich"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found (scripts/install-deps.sh installs MPICH)"
		}
	}
	return ""
}

type benchMPIResult struct {
	periodic, stopped, final, restart time.Duration
	bytes                             int64
}

func benchMPIOnce(e *benchEnv, prog string) (*benchMPIResult, error) {
	dir, err := os.MkdirTemp(e.dir, "mpi-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ckpt := filepath.Join(dir, "ckpt")
	log := filepath.Join(dir, "job.log")
	lines := func() int {
		b, _ := os.ReadFile(log)
		return bytes.Count(b, []byte{'\n'})
	}
	waitLines := func(p *benchProc, n int) error {
		deadline := time.Now().Add(2 * time.Minute)
		for lines() < n {
			if p.exited() || time.Now().After(deadline) {
				out, _ := os.ReadFile(filepath.Join(dir, "supervisor.out"))
				return fmt.Errorf("the MPI job logged %d steps, want %d:\n%s", lines(), n, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}
	job := []string{"mpiexec.mpich", "-np", strconv.Itoa(benchMPIRanks), prog, dir, "100000", strconv.Itoa(benchMPIMiB)}
	sup, err := benchStart(filepath.Join(dir, "supervisor.out"), true,
		append([]string{e.bin, "launch", "--ckpt-dir", ckpt, "--net", "private", "--"}, job...)...)
	if err != nil {
		return nil, err
	}
	defer benchKillUnder(dir, time.Second)
	if err := waitLines(sup, 3); err != nil {
		return nil, err
	}
	r := &benchMPIResult{}
	run, err := benchCommand(5*time.Minute, e.bin, "checkpoint", "--ckpt-dir", ckpt, "--json")
	if err != nil || run.code != 0 {
		return nil, fmt.Errorf("periodic checkpoint (%v):\n%s", err, run.out)
	}
	var c ckptResult
	if err := json.Unmarshal([]byte(run.out), &c); err != nil {
		return nil, fmt.Errorf("checkpoint --json: %v: %s", err, run.out)
	}
	r.periodic, r.stopped, r.bytes = time.Duration(c.DurationNs), time.Duration(c.StoppedNs), c.Bytes
	run, err = benchCommand(5*time.Minute, e.bin, "checkpoint", "--ckpt-dir", ckpt, "--json", "--kill")
	if err != nil || run.code != 0 {
		return nil, fmt.Errorf("final checkpoint (%v):\n%s", err, run.out)
	}
	r.final = run.wall
	sup.wait(time.Minute)

	if err := benchDropCaches(); err != nil {
		return nil, err
	}
	before := lines()
	start := time.Now()
	sup, err = benchStart(filepath.Join(dir, "supervisor.out"), true, e.bin, "restart", "--ckpt-dir", ckpt)
	if err != nil {
		return nil, err
	}
	if err := waitLines(sup, before+1); err != nil {
		return nil, err
	}
	r.restart = time.Since(start)
	return r, nil
}
