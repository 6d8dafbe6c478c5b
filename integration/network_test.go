package integration

import (
	"regexp"
	"strconv"
	"testing"
)

// netSteps is how many steps each netjob.py job takes: enough for two
// checkpoints and two restarts before the backlog's client is accepted
// (at two thirds) and the half-closed stream is drained.
const netSteps = 150

// TestNetworkJobs runs each mode of netjob.py with --net private: its TCP
// connections, listener backlog, half-closed stream, 1,000 connections,
// UDP queues (IPv4 and IPv6) and an asyncio server are checkpointed with
// data waiting in the kernel, the supervisor is killed, the job restarted,
// checkpointed with --kill and restarted again; the job checks every byte
// and datagram itself and its log must count on without a gap.
func TestNetworkJobs(t *testing.T) {
	e := setup(t)
	p := buildPrograms(t)
	modes := []string{"pair4", "pair6", "backlog", "halfclose", "many", "udp4", "udp6", "asyncio"}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			for _, name := range []string{"user-v2", "root-v1"} {
				t.Run(name, func(t *testing.T) {
					fl := e.pickFlavor(t, name)
					t.Parallel()
					machine.acquire(t, 1)
					j := newJob(t, e, fl)
					s := j.launch([]string{"--net", "private"}, pythonPath, p.netjob, mode, j.dir, strconv.Itoa(netSteps))
					j.preemptTwice(s, 15, 10, netSteps)
				})
			}
		})
	}
}

// preemptTwice takes the running job s through what a preemptible
// partition does to it: once it logged warmup steps in job.log, a
// checkpoint and a SIGKILL of the supervisor, a restart; progress steps
// later, a final checkpoint (checkpoint --kill) and a restart. The job
// must then run to its end, its log counting 1 to steps without a gap.
func (j *job) preemptTwice(s *supervisor, warmup, progress, steps int) {
	j.t.Helper()
	j.waitLines(s, "job.log", warmup)
	j.checkpoint()
	s.kill()

	s = j.restart()
	j.waitLines(s, "job.log", j.lines("job.log")+progress)
	j.checkpoint("--kill")
	s.finish(exitStopped, killTimeout)

	s = j.restart()
	s.finish(0, 2*progressTimeout)
	if err := checkSequence(j.readFile("job.log"), 1, steps, parseCounterLine); err != nil {
		j.t.Fatalf("job log across two checkpoints and restarts: %v\n%s", err, s.output())
	}
}

// netRefusal is the error of a checkpoint of a TCP socket in the node's
// network: the process, descriptor and socket, and what to do.
var netRefusal = regexp.MustCompile(`pid \d+ fd \d+: socket:\[\d+\] \(IPv4 TCP\): the job shares the node's network: .*launch it with --net private`)

// TestNetworkHostRefused: under --net host (the default) a job's TCP
// connection between its own processes is refused with the advice to use
// --net private, and the job runs on to its end. A checkpoint taken under
// --net private is refused a restart with --net host, before anything
// starts, and restarts with the recorded --net private.
func TestNetworkHostRefused(t *testing.T) {
	e := setup(t)
	p := buildPrograms(t)
	fl := e.pickFlavor(t, "user-v2", "root-v1")
	machine.acquire(t, 1)
	j := newJob(t, e, fl)
	s := j.launch(nil, pythonPath, p.netjob, "pair4", j.dir, "60")
	j.waitLines(s, "job.log", 5)
	code, out, errOut := j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
	if code == 0 || !netRefusal.MatchString(errOut) {
		t.Fatalf("checkpoint of a TCP job in the node's network: exit %d, want a refusal naming the socket and --net private:\n%s%s", code, out, errOut)
	}
	s.finish(0, progressTimeout)
	if err := checkSequence(j.readFile("job.log"), 1, 60, parseCounterLine); err != nil {
		t.Fatalf("the job did not run on after the refused checkpoint: %v", err)
	}

	j = newJob(t, e, fl)
	s = j.launch([]string{"--net", "private"}, pythonPath, p.netjob, "pair4", j.dir, "60")
	j.waitLines(s, "job.log", 5)
	j.checkpoint("--kill")
	s.finish(exitStopped, killTimeout)
	s = j.restart("--net", "host")
	if code := s.waitExit(cliTimeout); code != 1 || !s.outputContains("restart it with --net private, not --net host") || s.outputContains("restored generation") {
		t.Fatalf("restart with --net host of a --net private checkpoint: exit %d, want 1 and the refusal, nothing restored:\n%s", code, s.output())
	}
	s = j.restart()
	s.finish(0, progressTimeout)
	if err := checkSequence(j.readFile("job.log"), 1, 60, parseCounterLine); err != nil {
		t.Fatalf("restart with the recorded --net private: %v", err)
	}
}
