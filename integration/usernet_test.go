package integration

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestPrivateNetworkStacks: with pasta and with slirp4netns the job of
// --net private gets 10.0.2.100; a connection between two of its processes
// over that address is checkpointed, killed, restarted (with the stack
// started again before the restore), checkpointed with --kill and restarted.
func TestPrivateNetworkStacks(t *testing.T) {
	e := setup(t)
	p := buildPrograms(t)
	for _, stack := range []string{"pasta", "slirp4netns"} {
		t.Run(stack, func(t *testing.T) {
			if _, err := exec.LookPath(stack); err != nil {
				skipOrFail(t, "%s is not installed (scripts/install-deps.sh installs it)", stack)
			}
			for _, name := range []string{"user-v2", "root-v1"} {
				t.Run(name, func(t *testing.T) {
					fl := e.pickFlavor(t, name)
					machine.acquire(t, 1)
					j := newJob(t, e, fl)
					j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_USERNET="+stack)
					s := j.launch([]string{"--net", "private"}, pythonPath, p.netjob, "pairtap", j.dir, strconv.Itoa(netSteps))
					j.waitLines(s, "job.log", 1)
					if !s.outputContains("loopback and " + stack + ", the job at 10.0.2.100") {
						t.Errorf("the log does not say which stack carries the job's network:\n%s", s.output())
					}
					j.preemptTwice(s, 15, 10, netSteps)
				})
			}
		})
	}
}

// reachHost is a job that connects to the node's port argv[1] through the
// user-mode stack's gateway and then waits.
const reachHost = `import socket, sys, time
c = socket.create_connection(("10.0.2.2", int(sys.argv[1])), timeout=5)
open(sys.argv[2], "w").write("connected\n")
time.sleep(1000)`

// onlyLoopback is a job that finds no way out.
const onlyLoopback = `import socket
names = [n for _, n in socket.if_nameindex()]
assert names == ["lo"], names
try:
    socket.create_connection(("10.0.2.2", 9), timeout=2)
    raise SystemExit("reached 10.0.2.2 without a user-mode stack")
except OSError:
    pass`

// TestPrivateNetworkOutside: through pasta the job reaches a server of
// the node (at 10.0.2.2); a checkpoint then refuses that connection,
// naming the process, descriptor and both addresses, and the job runs on.
// Without a stack the job has loopback only, and the log says so.
func TestPrivateNetworkOutside(t *testing.T) {
	e := setup(t)
	fl := e.pickFlavor(t, "user-v2", "root-v1")
	t.Run("pasta", func(t *testing.T) {
		if _, err := exec.LookPath("pasta"); err != nil {
			skipOrFail(t, "pasta is not installed (scripts/install-deps.sh installs it)")
		}
		port := tcpServer(t)
		machine.acquire(t, 1)
		j := newJob(t, e, fl)
		j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_USERNET=pasta")
		s := j.launch([]string{"--net", "private"}, pythonPath, "-c", reachHost, strconv.Itoa(port), j.path("connected"))
		deadline := time.Now().Add(progressTimeout)
		for len(readIfThere(j.path("connected"))) == 0 {
			if s.exited() || time.Now().After(deadline) {
				t.Fatalf("the job did not reach the node through pasta (%s):\n%s", s.status(), s.output())
			}
			time.Sleep(50 * time.Millisecond)
		}
		code, out, errOut := j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
		refusal := regexp.MustCompile(`pid \d+ fd \d+: TCP connection 10\.0\.2\.100:\d+ -> 10\.0\.2\.2:` + strconv.Itoa(port) + `: the other end is not in the job`)
		if code == 0 || !refusal.MatchString(errOut) {
			t.Fatalf("checkpoint of a connection to the node: exit %d, want a refusal naming it:\n%s%s", code, out, errOut)
		}
		time.Sleep(200 * time.Millisecond)
		if s.exited() {
			t.Fatalf("the job ended after the refused checkpoint:\n%s", s.output())
		}
		s.kill()
	})
	t.Run("none", func(t *testing.T) {
		machine.acquire(t, 1)
		j := newJob(t, e, fl)
		j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_USERNET=none")
		s := j.launch([]string{"--net", "private"}, pythonPath, "-c", onlyLoopback)
		s.finish(0, progressTimeout)
		if !s.outputContains("loopback only, no way out") {
			t.Errorf("the log does not say the job has loopback only:\n%s", s.output())
		}
	})
}
