package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
)

// Incremental chain test sizes: a job whose memory is mostly data that
// never changes, with a few pages changed per step.
const (
	incrMiB   = 128
	incrSteps = 150
)

// chainManifest is what the test reads of a generation's manifest.
type chainManifest struct {
	Parent int `json:"parent"`
	Refs   []struct {
		Generation int    `json:"generation"`
		Name       string `json:"name"`
	} `json:"refs"`
	Stats struct {
		PageBytes int64 `json:"page_bytes"`
		RefBytes  int64 `json:"ref_bytes"`
	} `json:"stats"`
}

func (j *job) chainManifest(gen int) chainManifest {
	j.t.Helper()
	var m chainManifest
	b, err := os.ReadFile(filepath.Join(j.genDir(gen), "manifest.json"))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		j.t.Fatalf("manifest of generation %d: %v", gen, err)
	}
	return m
}

// reads reports whether generation gen's runs read file of generation from.
func (m chainManifest) reads(from int, file string) bool {
	return slices.ContainsFunc(m.Refs, func(r struct {
		Generation int    `json:"generation"`
		Name       string `json:"name"`
	}) bool {
		return r.Generation == from && r.Name == file
	})
}

// TestIncrementalChain takes a full and three incremental generations of a
// job that checks its memory's checksum at every step, and kills the
// supervisor in the middle of a fourth; restores each generation of the
// chain (the job must go on checking its memory); then damages the page
// data of generation 2: list must call it and every generation reading it
// unusable, and a restart must fall back to generation 1, from which the
// job runs to its end with every step logged once. Root's chain is
// compressed.
func TestIncrementalChain(t *testing.T) {
	e := setup(t)
	for _, name := range []string{"user-v2", "root-v2-zstd"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			const log = "job.log"
			opts := []string{"--incremental", "--keep", "0"}
			s := j.launch(opts, e.progs.mem, j.path(log), strconv.Itoa(incrMiB), strconv.Itoa(incrSteps))
			var res []ckptResult
			for range 4 {
				j.waitLines(s, log, j.lines(log)+3)
				res = append(res, j.checkpoint())
			}
			full := res[0].Bytes
			if full < incrMiB<<20 {
				t.Fatalf("the full generation wrote %d bytes, want the job's %d MiB at least", full, incrMiB)
			}
			for i, r := range res[1:] {
				if r.Bytes > full*15/100 {
					t.Errorf("incremental generation %d wrote %d bytes, more than 0.15x the full one's %d", r.Generation, r.Bytes, full)
				}
				m := j.chainManifest(r.Generation)
				if m.Parent != res[i].Generation || m.Stats.RefBytes < incrMiB<<20*9/10 {
					t.Errorf("generation %d: parent %d, %d bytes read from earlier generations; want parent %d and most of the job's memory",
						r.Generation, m.Parent, m.Stats.RefBytes, res[i].Generation)
				}
				t.Logf("generation %d: wrote %d bytes, %d left in earlier generations (full: %d), %d not read (%s)", r.Generation, r.Bytes, m.Stats.RefBytes, full, r.UnreadBytes, r.UnreadBy)
				// Where the kernel tracks writes, the generations after
				// the first are written without reading most of the job.
				if method := writetrack.Choose(kernel.Current()); method != writetrack.None &&
					(r.UnreadBytes < incrMiB<<20/2 || r.UnreadBy != method.String()) {
					t.Errorf("generation %d: %d bytes found unchanged by %q without reading them; want most of the job's %d MiB, by %s",
						r.Generation, r.UnreadBytes, r.UnreadBy, incrMiB, method)
				}
			}
			gen2Pages := filepath.Base(largestPageFile(t, j.genDir(res[1].Generation)))
			if !j.chainManifest(res[2].Generation).reads(res[1].Generation, gen2Pages) {
				t.Fatalf("generation %d does not read %s of generation %d: the chain is not exercised", res[2].Generation, gen2Pages, res[1].Generation)
			}
			j.checkList()

			// SIGKILL in the middle of an incremental checkpoint.
			s.signal(syscall.SIGUSR1)
			deadline := time.Now().Add(ckptTimeout)
			for !hasTempGeneration(j.ckptDir) {
				if j.latest() > res[3].Generation {
					t.Fatalf("generation %d completed before any .tmp-gen-* directory was seen", j.latest())
				}
				if s.exited() || time.Now().After(deadline) {
					t.Fatalf("no .tmp-gen-* directory after SIGUSR1 (%s):\n%s", s.status(), s.output())
				}
				time.Sleep(time.Millisecond)
			}
			s.kill()
			if got := j.latest(); got != res[3].Generation {
				t.Fatalf("latest is %d after a killed incremental checkpoint, want %d", got, res[3].Generation)
			}

			// Every generation of the chain restores, newest first (the
			// log is cut back to each one's length).
			for i := len(res) - 1; i >= 0; i-- {
				s = j.restart(append(opts, strconv.Itoa(res[i].Generation))...)
				j.waitLines(s, log, j.lines(log)+3)
				s.kill()
			}
			j.checkList()

			// Damaged data in the middle of the chain.
			flipByte(t, filepath.Join(j.genDir(res[1].Generation), gen2Pages))
			for _, l := range j.list() {
				reads := l.Generation > res[1].Generation && j.chainManifest(l.Generation).reads(res[1].Generation, gen2Pages)
				wantBad := l.Generation == res[1].Generation || reads
				if l.Valid == wantBad {
					t.Errorf("list after damaging generation %d: generation %d valid=%v (%s)", res[1].Generation, l.Generation, l.Valid, l.Error)
				}
				if reads && !strings.Contains(l.Error, "generation "+strconv.Itoa(res[1].Generation)) {
					t.Errorf("list: generation %d is unusable for %q, which does not name generation %d", l.Generation, l.Error, res[1].Generation)
				}
			}
			s = j.restart(opts...)
			j.waitLines(s, log, 1)
			s.finish(0, 120*time.Second)
			// The chain's damage is found before the restore (the
			// generations reading generation 2's data) or by it
			// (generation 2's own page data, verified as it is read).
			if !s.outputContains("using generation "+strconv.Itoa(res[0].Generation)) && !s.outputContains("trying generation "+strconv.Itoa(res[0].Generation)) {
				t.Errorf("restart did not say it fell back to generation %d:\n%s", res[0].Generation, s.output())
			}
			if err := checkSequence(j.readFile(log), 1, incrSteps, parseMemLine); err != nil {
				t.Fatalf("job log after the chain's restarts: %v", err)
			}
		})
	}
}

// Pre-copy test sizes: a job that rewrites 4096 pages (16 MiB) per step
// without pausing, so that its memory changes all through the copy.
const (
	precopyMiB   = 256
	precopySteps = 100000
)

// TestPreCopy checkpoints a job that writes its memory as fast as it can
// with --precopy (and --incremental): the periodic checkpoints copy most of
// its memory while it runs, and what it changed meanwhile is copied with
// the job stopped, so that each generation restores a job whose memory
// checksum still matches. A supervisor SIGKILLed during a pre-copy leaves
// the generation before as the latest. A final checkpoint --kill takes no
// pre-copy. The user's page files are compressed.
func TestPreCopy(t *testing.T) {
	e := setup(t)
	for _, name := range []string{"user-v2-zstd", "root-v2"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			machine.acquire(t, 2)
			j := newJob(t, e, fl)
			const log = "job.log"
			opts := []string{"--precopy", "--incremental"}
			s := j.launch(opts, e.progs.mem, j.path(log), strconv.Itoa(precopyMiB), strconv.Itoa(precopySteps), "4096", "0")
			var gens []int
			for range 2 {
				j.waitLines(s, log, j.lines(log)+3)
				r := j.checkpoint()
				m := j.genStats(r.Generation)
				// The first generation copies all of the job's memory ahead,
				// the incremental second what changed since the first.
				if want := int64(precopyMiB << 20 * 9 / 10); len(gens) == 0 && m.PreCopyBytes < want || m.PreCopyBytes == 0 {
					t.Errorf("generation %d: %d bytes copied while the job ran, want most of its %d MiB (some for an incremental one)", r.Generation, m.PreCopyBytes, precopyMiB)
				}
				t.Logf("generation %d: %d bytes, %d of them before the stop; checkpoint %v, job stopped %v",
					r.Generation, r.Bytes, m.PreCopyBytes, time.Duration(r.DurationNs), time.Duration(r.StoppedNs))
				gens = append(gens, r.Generation)
			}
			// SIGKILL in the middle of a pre-copy: the generation being
			// written does not count, and the one before restores.
			s.signal(syscall.SIGUSR1)
			deadline := time.Now().Add(ckptTimeout)
			for !hasTempGeneration(j.ckptDir) {
				if s.exited() || time.Now().After(deadline) || j.latest() > gens[1] {
					t.Fatalf("no .tmp-gen-* directory seen after SIGUSR1 (%s, latest %d):\n%s", s.status(), j.latest(), s.output())
				}
				time.Sleep(time.Millisecond)
			}
			s.kill()
			if got := j.latest(); got != gens[1] {
				t.Fatalf("latest is %d after a killed pre-copy, want %d", got, gens[1])
			}
			s = j.restart(opts...)
			j.waitLines(s, log, j.lines(log)+3)
			final := j.checkpoint("--kill")
			if m := j.genStats(final.Generation); m.PreCopyBytes != 0 {
				t.Errorf("checkpoint --kill copied %d bytes before stopping the job, want none", m.PreCopyBytes)
			}
			s.waitExit(killTimeout)
			j.checkList()
			// Each pre-copied generation restores a job whose memory is
			// whole: mem checks its checksum at every step.
			for _, gen := range gens {
				s = j.restart(append(opts, strconv.Itoa(gen))...)
				j.waitLines(s, log, j.lines(log)+3)
				s.kill()
			}
			s = j.restart(opts...)
			at := j.lines(log)
			j.waitLines(s, log, at+5)
			s.kill()
			if err := checkSequence(j.readFile(log), 1, j.lines(log), parseMemLine); err != nil {
				t.Fatalf("job log: %v", err)
			}
		})
	}
}

// genStats reads the stats of generation gen's manifest.
func (j *job) genStats(gen int) struct {
	PreCopyBytes int64 `json:"precopy_bytes"`
} {
	j.t.Helper()
	var m struct {
		Stats struct {
			PreCopyBytes int64 `json:"precopy_bytes"`
		} `json:"stats"`
	}
	b, err := os.ReadFile(filepath.Join(j.genDir(gen), "manifest.json"))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		j.t.Fatalf("manifest of generation %d: %v", gen, err)
	}
	return m.Stats
}
