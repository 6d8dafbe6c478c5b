package image

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv makes the test binary act as a checkpoint writer that the
// test kills: "slow:DIR" or "loop:DIR".
const crashChildEnv = "CKPT_IMAGE_STORE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(crashChildEnv); spec != "" {
		mode, dir, _ := strings.Cut(spec, ":")
		if err := crashChild(mode, dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild writes generations into dir the way a supervisor does, and
// prints "ready" once it is in the middle of writing.
func crashChild(mode, dir string) error {
	s, err := OpenStore(dir, false)
	if err != nil {
		return err
	}
	if _, err := s.Lock(); err != nil {
		return err
	}
	if err := s.CleanStale(); err != nil {
		return err
	}
	chunk := make([]byte, 8<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	switch mode {
	case "slow":
		// 1 GiB in 8 MiB writes, slowed down so the kill lands mid-file.
		return writeGen(s, 2, 128, chunk, func(i int) {
			if i == 8 {
				fmt.Println("ready")
			}
			time.Sleep(5 * time.Millisecond)
		})
	case "loop":
		fmt.Println("ready")
		for {
			if err := writeGen(s, 3, 1+rand.IntN(3), chunk[:1<<20], func(int) {}); err != nil {
				return err
			}
			if err := s.Prune(2); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// writeGen commits one generation of procs processes, each with a page file
// of chunks copies of chunk; step runs before each page write.
func writeGen(s *Store, procs, chunks int, chunk []byte, step func(int)) error {
	w, err := s.Begin()
	if err != nil {
		return err
	}
	defer w.Abort()
	m := &Manifest{}
	for pid := 1; pid <= procs; pid++ {
		d, err := w.Create(PagesName(pid))
		if err != nil {
			return err
		}
		for i := range chunks {
			step(i)
			if _, err := d.Write(chunk); err != nil {
				return err
			}
		}
		if err := d.Close(); err != nil {
			return err
		}
		if err := w.WriteJSON(CoreName(pid), &Process{PID: pid}); err != nil {
			return err
		}
		m.Processes = append(m.Processes, ProcessRef{PID: pid, Core: CoreName(pid), Pages: PagesName(pid)})
	}
	return w.Commit(m)
}

// startCrashChild runs the writer and waits until it says it is writing.
func startCrashChild(t *testing.T, mode, dir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode+":"+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("crash child did not start: %q, %v", line, err)
	}
	return cmd
}

func killChild(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("crash child ended before the kill: %v", err)
	}
}

// checkRecoverable asserts what a restart after a crash relies on: latest
// names a generation that verifies, it is the newest good one or older, the
// lock is free again, and cleaning leaves only committed generations.
func checkRecoverable(t *testing.T, s *Store, atLeast int) *Generation {
	t.Helper()
	latest, err := s.Latest()
	must(t, err)
	lg, err := s.Open(latest)
	must(t, err)
	must(t, lg.Verify())
	g, err := s.NewestGood(nil)
	must(t, err)
	if g.Gen < latest || g.Gen < atLeast {
		t.Fatalf("NewestGood = %d, latest = %d, want at least %d", g.Gen, latest, atLeast)
	}
	unlock, err := s.Lock()
	if err != nil {
		t.Fatalf("lock still held after the writer died: %v", err)
	}
	defer unlock()
	must(t, s.CleanStale())
	entries, err := os.ReadDir(s.Dir)
	must(t, err)
	for _, e := range entries {
		if n := e.Name(); n != LatestName && n != LockName && !strings.HasPrefix(n, genPrefix) {
			t.Fatalf("CleanStale left %s", n)
		}
	}
	return g
}

func TestCrashWhileWritingLargeGeneration(t *testing.T) {
	s := newStore(t)
	commitGen(t, s, testFiles{PagesName(1): []byte("previous generation")})

	cmd := startCrashChild(t, "slow", s.Dir)
	time.Sleep(100 * time.Millisecond)
	killChild(t, cmd)

	tmp, err := filepath.Glob(filepath.Join(s.Dir, tmpGenPrefix+"*"))
	must(t, err)
	if len(tmp) != 1 {
		t.Fatalf("expected the killed writer's temporary directory, found %v", tmp)
	}
	if g := checkRecoverable(t, s, 1); g.Gen != 1 {
		t.Fatalf("NewestGood = %d, want the previous generation 1", g.Gen)
	}
	if gens, _ := s.Generations(); len(gens) != 1 {
		t.Fatalf("Generations = %v, want [1]", gens)
	}
}

// TestCrashAtRandomMoments kills a writer that commits and prunes in a loop
// at random moments, so kills land in every step of Commit and Prune.
func TestCrashAtRandomMoments(t *testing.T) {
	rounds := 25
	if testing.Short() {
		rounds = 5
	}
	s := newStore(t)
	commitGen(t, s, testFiles{PagesName(1): []byte("first")})
	newest := 1
	for round := range rounds {
		cmd := startCrashChild(t, "loop", s.Dir)
		time.Sleep(time.Duration(rand.IntN(150_000)) * time.Microsecond)
		killChild(t, cmd)
		g := checkRecoverable(t, s, newest)
		t.Logf("round %d: recovered generation %d", round, g.Gen)
		newest = g.Gen
	}
}
