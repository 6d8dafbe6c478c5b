package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The two-node test restarts jobs on another node, as a Slurm requeue
// does: scripts/two-nodes.sh boots two qemu machines from a Debian kernel
// with the host's root as theirs, their own hostname, pids, cgroups, /tmp
// and /dev/shm, other CPU models, and a shared directory (9p) holding the
// programs, the jobs' logs and their checkpoint directories. What each
// node does is testdata/nodes/node.sh. CKPT_TEST_NODES names the kernels
// ("5.10,6.1" or "all"); without it the test is skipped.

const (
	// nodeTicks are the steps of node-a's C and Python jobs; nodeAVXSeconds
	// the running time of node-b's AVX job.
	nodeTicks      = 200
	nodeAVXSeconds = 20
	// nodesTimeout bounds both machines from boot to power-off.
	nodesTimeout = 15 * time.Minute
)

// nodePairing is a CPU for node-a; node-b's is qemu's max.
type nodePairing struct {
	name, cpu string
	// moreState says node-b enables register state node-a does not:
	// node-a's jobs are refused there, naming it.
	moreState bool
}

// nodePairings: the first is what make test runs, all of them with
// CKPT_TEST_NODES=all. qemu's emulation can do neither AVX-512 nor AMX,
// so the CPUs differ in AVX2, and in MPX and PKRU state.
var nodePairings = []nodePairing{
	{"no-avx2", "max,-avx2,model-id=ckpt-apptainer test node without AVX2", false},
	{"sandybridge", "SandyBridge", true},
}

func TestTwoNodes(t *testing.T) {
	want := os.Getenv("CKPT_TEST_NODES")
	if want == "" {
		t.Skip("CKPT_TEST_NODES is not set (make test and make test-nodes set it)")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the two-node test runs as root: qemu gives the guests' files their owners")
	}
	names, pairings := kernelNames, nodePairings
	if want != "all" {
		names, pairings = strings.Split(want, ","), nodePairings[:1]
	}
	e := setup(t)
	machine.acquire(t, 2)
	for _, name := range names {
		for _, pair := range pairings {
			t.Run(name+"/"+pair.name, func(t *testing.T) { runNodes(t, e, name, pair) })
		}
	}
}

// runNodes runs both nodes with kernel name and checks what they did.
func runNodes(t *testing.T, e *testEnv, name string, pair nodePairing) {
	shared := prepareNodes(t, e)
	script, err := filepath.Abs("../scripts/two-nodes.sh")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(script, name, shared, filepath.Join(shared, "node.sh"))
	cmd.Env = append(os.Environ(), fmt.Sprintf("NODE_TIMEOUT=%d", int(nodesTimeout.Seconds())), "NODE_A_CPU="+pair.cpu)
	out, err := cmd.CombinedOutput()
	t.Logf("kernel %s: both nodes ran %v", name, time.Since(start).Round(time.Second))
	n := &nodesRun{t: t, dir: shared}
	if err != nil {
		t.Errorf("two-nodes.sh: %v\n%s", err, out)
	}
	for _, node := range []string{"node-a", "node-b"} {
		if got := strings.TrimSpace(n.file(node + ".exit")); got != "exit 0" {
			t.Errorf("%s: %q\n%s\n--- console ---\n%s", node, got, n.file(node+".out"), tail([]byte(n.file(node+".console")), 30))
		}
	}
	checkNodes(n, pair)
}

// prepareNodes makes the shared directory: the node script and its
// settings, static programs, and the user's job directory.
func prepareNodes(t *testing.T, e *testEnv) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ckpt-nodes-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("CKPT_KEEP_NODES") != "" {
			t.Logf("kept the shared directory %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	bin, job := filepath.Join(dir, "bin"), filepath.Join(dir, "job")
	for _, d := range []string{bin, job} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(job, e.uid, e.gid); err != nil {
		t.Fatal(err)
	}
	goBuild := exec.Command("go", "build", "-o", filepath.Join(bin, "ckpt-apptainer"), "../cmd/ckpt-apptainer")
	goBuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	builds := []*exec.Cmd{
		goBuild,
		exec.Command("gcc", "-O2", "-static", "-pthread", "-o", filepath.Join(bin, "nodelocal"), "testdata/suite/nodelocal.c", "-lrt"),
		exec.Command("gcc", "-O2", "-static", "-pthread", "-o", filepath.Join(bin, "avx"), "testdata/avx.c"),
	}
	for _, c := range builds {
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(c.Args, " "), err, out)
		}
	}
	for src, dst := range map[string]string{
		"testdata/nodes/node.sh":   filepath.Join(dir, "node.sh"),
		"testdata/suite/mp_shm.py": filepath.Join(bin, "mp_shm.py"),
	} {
		if err := copyFile(src, dst, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := fmt.Sprintf("USER_UID=%d\nUSER_GID=%d\nPYTHON=%s\nAVX_SECONDS=%d\nTICKS=%d\n",
		e.uid, e.gid, pythonPath, nodeAVXSeconds, nodeTicks)
	if err := os.WriteFile(filepath.Join(dir, "node.env"), []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nodesRun reads what the nodes left in the shared directory.
type nodesRun struct {
	t   *testing.T
	dir string
}

func (n *nodesRun) file(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, name))
	return string(b)
}

// step says whether a node's step exited with status want, failing the
// test with its output when not.
func (n *nodesRun) step(node, name, want string) bool {
	n.t.Helper()
	if got := strings.TrimSpace(n.file(node + "." + name + ".status")); got != want {
		n.t.Errorf("%s: %s exited %q, want %s:\n%s", node, name, got, want, n.file(node+"."+name+".out"))
		return false
	}
	return true
}

// checkNodes checks the jobs' logs and what each step said.
func checkNodes(n *nodesRun, pair nodePairing) {
	t := n.t
	if a, b := n.file("node-a.hostname"), n.file("node-b.hostname"); a == b || a == "" {
		t.Errorf("the nodes' hostnames are %q and %q: want two different ones", a, b)
	}
	// node-a checkpointed its jobs, saving what lives only on that node.
	for _, job := range []string{"c", "py"} {
		n.step("node-a", job+".checkpoint", "0")
		inspect := n.file("node-a." + job + ".inspect.out")
		if !strings.Contains(inspect, "saved (node-local") || !strings.Contains(inspect, "/dev/shm/") {
			t.Errorf("inspect of %s lists no /dev/shm file saved:\n%s", job, inspect)
		}
		if !regexp.MustCompile(`reference\s+` + regexp.QuoteMeta(n.dir+"/job/"+job+".log")).MatchString(inspect) {
			t.Errorf("inspect of %s does not list its log on the shared directory as a reference:\n%s", job, inspect)
		}
	}
	if inspect := n.file("node-a.c.inspect.out"); !strings.Contains(inspect, "/tmp/scratch/") {
		t.Errorf("inspect of the C job does not list its scratch file in node-local /tmp:\n%s", inspect)
	}
	if pair.moreState {
		// node-b enables register state node-a did not: refused.
		for _, job := range []string{"c", "py"} {
			out := n.file("node-b." + job + ".restart.out")
			if strings.TrimSpace(n.file("node-b."+job+".restart.status")) == "0" || !strings.Contains(out, "this one adds MPX bounds") ||
				strings.Contains(out, "restored generation") {
				t.Errorf("node-b's restart of %s does not refuse it before starting, naming the register state node-b adds:\n%s", job, out)
			}
		}
	} else {
		checkNodeRestarts(n)
	}
	checkAVXRefused(n)
}

// checkNodeRestarts checks node-b restarted node-a's jobs: their files
// were re-created, and each job went on to its end with every step
// logged once.
func checkNodeRestarts(n *nodesRun) {
	t := n.t
	for _, job := range []string{"c", "py"} {
		if !n.step("node-b", job+".restart", "0") {
			continue
		}
		out := n.file("node-b." + job + ".restart.out")
		if !strings.Contains(out, "re-created /dev/shm/") {
			t.Errorf("the restart of %s on node-b does not say it re-created the job's /dev/shm files:\n%s", job, out)
		}
		if _, err := checkSuiteLog([]byte(n.file("job/" + job + ".log"))); err != nil {
			t.Errorf("%s job log: %v\n%s", job, err, tail([]byte(n.file("job/"+job+".log")), 20))
		}
	}
	if out := n.file("node-b.c.restart.out"); !strings.Contains(out, "re-created /tmp/scratch/") {
		t.Errorf("the restart of the C job does not say it re-created its scratch file:\n%s", out)
	}
}

// checkAVXRefused checks node-a refused the AVX job of node-b's newer CPU
// before starting it, naming what its CPU lacks, and node-b restarted it
// to its end.
func checkAVXRefused(n *nodesRun) {
	t := n.t
	n.step("node-b", "avx.checkpoint", "0")
	refused := n.file("node-a.avx.restart.out")
	if strings.TrimSpace(n.file("node-a.avx.restart.status")) == "0" || !strings.Contains(refused, "avx2") ||
		!strings.Contains(refused, "the CPU extensions") || strings.Contains(refused, "restored generation") {
		t.Errorf("node-a's restart of the AVX job (status %s) does not refuse it before starting, naming avx2:\n%s",
			n.file("node-a.avx.restart.status"), refused)
	}
	if n.step("node-b", "avx.restart", "0") {
		if err := checkAVXLog([]byte(n.file("job/avx.log")), nodeAVXSeconds); err != nil {
			t.Errorf("AVX job log: %v", err)
		}
	}
}
