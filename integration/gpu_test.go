package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// standInGPU is a GPU node as the supervisor sees it, on a machine without
// one: a device file the job holds open (named as the NVIDIA devices are),
// the driver's /proc files, and testdata/fakecuda in place of the helper,
// which logs the driver calls.
type standInGPU struct {
	dev, proc, state, log, fail string
}

const standInUUID = "GPU-00000000-1111-2222-3333-444444444444"

// standInDevice is the stand-in device file. Minor 250: no node has that
// many GPUs, so a real one is never touched.
const standInDevice = "/dev/nvidia250"

func newStandInGPU(t *testing.T, j *job) *standInGPU {
	t.Helper()
	g := &standInGPU{
		dev:   standInDevice,
		proc:  j.path("nvidia-proc"),
		state: j.path("fakecuda.state"),
		log:   j.path("fakecuda.log"),
		fail:  j.path("fakecuda.fail"),
	}
	g.setDriver(t, "580.159.04")
	info := filepath.Join(g.proc, "gpus", "0000:1b:00.0")
	if err := os.MkdirAll(info, 0o755); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(info, "information"), []byte("Model: \t\t NVIDIA H200\nGPU UUID: \t "+standInUUID+
		"\nBus Location: \t 0000:1b:00.0\nDevice Minor: \t 250\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_CUDA_HELPER="+j.env.progs.fakecuda, "CKPT_APPTAINER_NVIDIA_PROC="+g.proc,
		"FAKECUDA_STATE="+g.state, "FAKECUDA_LOG="+g.log, "FAKECUDA_FAIL="+g.fail)
	return g
}

func (g *standInGPU) setDriver(t *testing.T, version string) {
	t.Helper()
	if err := os.MkdirAll(g.proc, 0o755); err != nil {
		t.Fatal(err)
	}
	line := "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  " + version + "  Release Build\n"
	if err := os.WriteFile(filepath.Join(g.proc, "version"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

// calls returns the driver calls logged since the last call of calls, as
// "op pid" lines.
func (g *standInGPU) calls(t *testing.T, seen *int) []string {
	t.Helper()
	b, _ := os.ReadFile(g.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) == 1 && lines[0] == "" {
		lines = nil
	}
	out := lines[min(*seen, len(lines)):]
	*seen = len(lines)
	return out
}

// ops drops the pids of calls.
func ops(calls []string) string {
	var out []string
	for _, c := range calls {
		op, _, _ := strings.Cut(c, " ")
		out = append(out, op)
	}
	return strings.Join(out, ",")
}

// opCounts counts calls by operation.
func opCounts(calls []string) map[string]int {
	n := map[string]int{}
	for _, op := range strings.Split(ops(calls), ",") {
		if op != "" {
			n[op]++
		}
	}
	return n
}

// TestGPUJobWithStandInDriver runs a job holding a (stand-in) NVIDIA device
// through checkpoints and restarts and checks the driver calls the
// supervisor makes around them: a checkpoint the driver fails puts the
// process back and leaves no generation, the job running on; a good one
// locks, checkpoints, restores and unlocks it, and records its GPU; a
// restart on a node with another driver version is refused before
// anything starts; a restart restores and unlocks the restored process; and the
// job's count goes on to its end with no gap or repeat.
func TestGPUJobWithStandInDriver(t *testing.T) {
	e := setup(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to make the stand-in device file in /dev")
	}
	if _, err := os.Stat(standInDevice); err == nil {
		t.Skipf("%s exists here", standInDevice)
	}
	if err := os.WriteFile(standInDevice, []byte("stand-in GPU"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(standInDevice) })
	for _, prefs := range [][]string{{"root-v2", "root-none"}, {"user-v2", "user-none"}} {
		t.Run(prefs[0], func(t *testing.T) {
			fl := e.pickFlavor(t, prefs...)
			machine.acquire(t, 1)
			gpuJob(t, newJob(t, e, fl))
		})
	}
}

// gpuJob is TestGPUJobWithStandInDriver in one flavor.
func gpuJob(t *testing.T, j *job) {
	e := j.env
	g := newStandInGPU(t, j)
	const log = "job.log"
	s := j.launch(nil, "/bin/sh", "-c", `exec 9<`+g.dev+` && exec "$0" "$@"`, e.progs.counter, j.path(log), strconv.Itoa(counterSteps))
	j.waitLines(s, log, 20)
	seen := 0

	if err := os.WriteFile(g.fail, []byte("checkpoint\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
	if code == 0 || !strings.Contains(errOut, "GPU process") || !strings.Contains(errOut, "CUDA_ERROR_UNKNOWN") {
		t.Fatalf("a checkpoint the driver fails: exit %d, want an error naming the GPU process and the driver's error:\n%s%s", code, out, errOut)
	}
	if got := ops(g.calls(t, &seen)); got != "lock,checkpoint,unlock" {
		t.Errorf("driver calls of the failed checkpoint: %s, want lock,checkpoint,unlock", got)
	}
	if gens := j.generations(); len(gens) != 0 {
		t.Errorf("generations %v after the failed checkpoint, want none", gens)
	}
	os.Remove(g.fail)
	j.waitLines(s, log, j.lines(log)+20)

	c := j.checkpoint()
	calls := g.calls(t, &seen)
	if got := ops(calls); got != "lock,checkpoint,restore,unlock" {
		t.Errorf("driver calls of a checkpoint: %s, want lock,checkpoint,restore,unlock", got)
	}
	_, out, _ = j.cli("inspect", "--ckpt-dir", j.ckptDir, "--json", strconv.Itoa(c.Generation))
	var r struct {
		Manifest struct {
			GPU struct {
				Driver    string `json:"driver"`
				Processes []struct {
					PID     int `json:"pid"`
					Devices []struct {
						UUID  string `json:"uuid"`
						Minor int    `json:"minor"`
					} `json:"devices"`
				} `json:"processes"`
			} `json:"gpu"`
		} `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	gp := r.Manifest.GPU
	if gp.Driver != "580.159.04" || len(gp.Processes) != 1 || len(gp.Processes[0].Devices) != 1 ||
		gp.Processes[0].Devices[0].UUID != standInUUID || gp.Processes[0].Devices[0].Minor != 250 {
		t.Errorf("recorded GPU %+v, want the job's process on %s (/dev/nvidia250), driver 580.159.04", gp, standInUUID)
	}
	j.waitLines(s, log, j.lines(log)+20)
	s.kill()

	g.setDriver(t, "575.51.03")
	refused := j.restart()
	if code := refused.waitExit(60 * time.Second); code == 0 || !refused.outputContains("restart not started") || !refused.outputContains("the driver is 575.51.03") {
		t.Fatalf("restart with another driver version: exit %d, want refused before starting anything:\n%s", code, refused.output())
	}
	if got := g.calls(t, &seen); len(got) != 0 {
		t.Errorf("the refused restart called the driver: %v", got)
	}

	g.setDriver(t, "580.159.04")
	s = j.restart()
	j.waitLines(s, log, j.lines(log)+20)
	after := g.calls(t, &seen)
	if got := ops(after); got != "restore,unlock" {
		t.Errorf("driver calls of the restart: %s, want restore,unlock", got)
	} else if after[0] == calls[0] {
		t.Errorf("the restart restored %q, the pid the process had before it", after[0])
	}
	if !s.outputContains("back on the GPU") {
		t.Errorf("the restart does not say the GPU processes are back:\n%s", s.output())
	}
	s.finish(0, 60*time.Second)
	if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
		t.Fatalf("job log: %v", err)
	}
}

// TestGPUContainerWithStandInDriver runs an `apptainer exec --nv` job whose
// shell holds the stand-in device (Apptainer binds the host's /dev), as the
// user: every process of the container holding it is taken off the
// (stand-in) GPU and put back at a checkpoint, restored and unlocked at a
// restart after SIGKILL, and the job's ticks go on to its end.
func TestGPUContainerWithStandInDriver(t *testing.T) {
	e := setup(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to make the stand-in device file in /dev")
	}
	if _, err := os.Stat(standInDevice); err == nil {
		t.Skipf("%s exists here", standInDevice)
	}
	sif := busyboxImage(t)
	if err := os.WriteFile(standInDevice, []byte("stand-in GPU"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(standInDevice) })
	fl := e.pickFlavor(t, "user-v2", "user-none")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	g := newStandInGPU(t, j)
	data := j.path("data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, e.uid, e.gid); err != nil {
		t.Fatal(err)
	}
	const steps = 200
	script := "exec 9<" + standInDevice + "\n" + busyboxCounter
	argv := apptainerArgv(fl, sif, "sh", "-c", script, "counter", strconv.Itoa(steps), containerData+"/ticks.log")
	at := len(argv) - 7 // before SIF sh -c SCRIPT counter STEPS LOG
	argv = append(append(append([]string{}, argv[:at]...), "--nv", "--bind", data+":"+containerData), argv[at:]...)
	s := j.launch(nil, argv...)
	const log = "data/ticks.log"
	j.waitLines(s, log, 20)
	seen := 0

	j.checkpoint()
	calls := g.calls(t, &seen)
	counts := opCounts(calls)
	if counts["lock"] == 0 || counts["lock"] != counts["checkpoint"] || counts["lock"] != counts["restore"] || counts["lock"] != counts["unlock"] {
		t.Fatalf("driver calls of the checkpoint %v: want each process locked, checkpointed, restored and unlocked", calls)
	}
	j.waitLines(s, log, j.lines(log)+20)
	s.kill()

	s = j.restart()
	j.waitLines(s, log, j.lines(log)+20)
	after := g.calls(t, &seen)
	counts = opCounts(after)
	if counts["restore"] == 0 || counts["restore"] != counts["unlock"] || len(after) != 2*counts["restore"] {
		t.Errorf("driver calls of the restart %v: want each GPU process restored and unlocked", after)
	}
	s.finish(containerExit, containerFinishTimeout)
	if err := checkSequence(j.readFile(log), 1, steps, parseTickLine); err != nil {
		t.Fatalf("job log: %v", err)
	}
}
