package integration

import (
	"context"
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

// The instance story: an Apptainer instance launched under the supervisor
// (`launch -- apptainer instance start`), checkpointed by name, lost to
// SIGKILL, restarted by name as a new instance of the same name,
// checkpointed with --kill, restarted, and stopped from outside the job
// with `apptainer instance stop`. The instance's startscript runs the
// busybox counter, whose log must hold every step once.

// instanceSteps is how many steps the instance's counter runs; it then
// sleeps until the instance is stopped.
const instanceSteps = 400

// instanceScript is the startscript's job: busyboxCounter with its
// arguments fixed, since an instance's startscript takes none at restart.
var instanceScript = fmt.Sprintf(`set -- %d %s/ticks
exec 3>>"$2"
i=0
while [ $i -lt $1 ]; do
	i=$((i + 1))
	echo "tick $i" >&3
	sleep 0.05
done
while :; do sleep 1; done
`, instanceSteps, containerData)

func TestInstanceCheckpointRestart(t *testing.T) {
	e := setup(t)
	for _, flName := range containerFlavors {
		t.Run(flName, func(t *testing.T) {
			t.Parallel()
			fl := e.flavorNamed(t, flName)
			sif := instanceImage(t)
			machine.acquire(t, 1)
			instanceCheckpointRestart(t, e, fl, sif)
		})
	}
}

func instanceCheckpointRestart(t *testing.T, e *testEnv, fl flavor, sif string) {
	j := newJob(t, e, fl)
	data := j.path("data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(data, "instance.sh")
	if err := os.WriteFile(script, []byte(instanceScript), 0o644); err != nil {
		t.Fatal(err)
	}
	j.chown(data, script)
	log := filepath.Join("data", "ticks")
	name := "ckpt-it-" + strings.TrimPrefix(filepath.Base(j.dir), "ckpt-it-job-")
	argv := []string{"apptainer", "instance", "start"}
	if !fl.user {
		argv = append(argv, "--userns")
	}
	argv = append(argv, "--bind", data+":"+containerData, sif, name)
	t.Cleanup(func() { j.instanceCommand("stop", "--force", name) })

	s := j.launch(nil, argv...)
	j.waitLines(s, log, 10)
	j.checkInstanceListed(name)

	// The name is taken while the instance runs.
	if code, out, errOut := j.cli(append([]string{"launch", "--ckpt-dir", j.path("other"), "--no-cgroup", "--"}, argv...)...); code == 0 || !strings.Contains(out+errOut, "already running") {
		t.Errorf("a second launch of instance %s: exit %d, output:\n%s%s", name, code, out, errOut)
	}
	if !fl.user {
		j.checkStrangerRefused(s, name, log)
	}

	j.checkpointInstance(name)
	j.waitLines(s, log, j.lines(log)+10)
	s.kill()

	s = j.start("restart", append([]string{"--debug", "restart", "--instance", name}, j.cgroupArgs()...))
	j.waitLines(s, log, j.lines(log)+10)
	j.checkInstanceListed(name)
	j.checkpointInstance(name, "--kill")
	s.finish(143, killTimeout)

	s = j.restart()
	deadline := time.Now().Add(containerFinishTimeout)
	for j.lines(log) < instanceSteps && time.Now().Before(deadline) && !s.exited() {
		time.Sleep(100 * time.Millisecond)
	}
	j.checkInstanceListed(name)
	if code, out := j.instanceCommand("stop", name); code != 0 {
		t.Fatalf("apptainer instance stop %s: exit %d\n%s", name, code, out)
	}
	s.finish(0, killTimeout)
	if err := checkSequence(j.readFile(log), 1, instanceSteps, parseTickLine); err != nil {
		t.Fatalf("instance log after two restarts: %v", err)
	}
}

// checkpointInstance checkpoints the job by its instance's name.
func (j *job) checkpointInstance(name string, extra ...string) {
	j.t.Helper()
	code, out, errOut := j.cli(append([]string{"checkpoint", "--instance", name}, extra...)...)
	if code != 0 {
		j.t.Fatalf("checkpoint --instance %s failed (exit %d):\n%s%s", name, code, out, errOut)
	}
}

// instanceCommand runs `apptainer instance CMD ARGS` outside the job, as
// the flavor's user, and returns its status and output.
func (j *job) instanceCommand(cmd string, args ...string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	argv := append([]string{"apptainer", "instance", cmd}, args...)
	if j.fl.user {
		argv = append([]string{"runuser", "-u", j.env.user, "--"}, argv...)
	}
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := c.CombinedOutput()
	if err != nil && c.ProcessState == nil {
		return -1, err.Error()
	}
	return c.ProcessState.ExitCode(), string(out)
}

// checkInstanceListed checks that `apptainer instance list` outside the
// job shows the instance with the host pid of its init.
func (j *job) checkInstanceListed(name string) {
	j.t.Helper()
	deadline := time.Now().Add(cliTimeout)
	var out string
	for time.Now().Before(deadline) {
		_, out = j.instanceCommand("list", name)
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != name {
				continue
			}
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				break
			}
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "appinit" {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	j.t.Fatalf("apptainer instance list does not show %s with its appinit's host pid:\n%s", name, out)
}

// checkStrangerRefused puts a process into the instance's namespaces from
// outside the job (as `apptainer exec instance://` would from inside it):
// a checkpoint must be refused naming it, and the job must run on.
func (j *job) checkStrangerRefused(s *supervisor, name, log string) {
	j.t.Helper()
	_, out := j.instanceCommand("list", name)
	var appinit int
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == name {
			appinit, _ = strconv.Atoi(f[1])
		}
	}
	if appinit == 0 {
		j.t.Fatalf("no pid for instance %s in:\n%s", name, out)
	}
	stranger := exec.Command("nsenter", "-t", strconv.Itoa(appinit), "-a", "sleep", "60")
	if err := stranger.Start(); err != nil {
		j.t.Fatalf("nsenter: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // nsenter forks the sleep into the PID namespace
	defer func() {
		// nsenter waits for its child, which the kill must reach itself.
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", stranger.Process.Pid, stranger.Process.Pid))
		for _, f := range strings.Fields(string(kids)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		stranger.Process.Kill()
		stranger.Wait()
	}()
	code, o, e := j.cli("checkpoint", "--instance", name)
	if code == 0 || !strings.Contains(o+e, "without being part of the job") {
		j.t.Errorf("checkpoint with a stranger in the instance: exit %d, output:\n%s%s", code, o, e)
	}
	before := j.lines(log)
	j.waitLines(s, log, before+5)
}
