package integration

import (
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tcpClient is a job holding a TCP connection to a server outside it,
// which no checkpoint can take along.
const tcpClient = `import socket, sys, time
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
time.sleep(1000)`

// tcpServer listens on a port of the node's loopback for the test's
// lifetime, accepting connections and holding them open, and returns the
// port.
func tcpServer(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNotCheckpointable: a job with a connection to a server outside it
// is checkpointed soon after launch (--first-checkpoint), the failure is
// reported loudly once and briefly after; with --require-checkpoint the job
// is ended at once with the documented status and no generation; without,
// it runs on, and its stop says it has no checkpoint to resume from.
func TestNotCheckpointable(t *testing.T) {
	e := setup(t)
	port := strconv.Itoa(tcpServer(t))
	const loud = "THIS JOB CANNOT BE CHECKPOINTED"
	for _, name := range []string{"user-v2", "root-v1"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			job := []string{"python3", "-c", tcpClient, port}

			start := time.Now()
			s := j.launch([]string{"--interval", "1h", "--first-checkpoint", "2s", "--require-checkpoint"}, job...)
			if code := s.waitExit(30 * time.Second); code != 79 {
				t.Fatalf("--require-checkpoint: exit status %d, want 79:\n%s", code, s.output())
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("the job was ended %v after launch, want soon after its first checkpoint at 2s", took)
			}
			for _, want := range []string{loud, "first checkpoint in 2s", "cannot be checkpointed (--require-checkpoint); exit status 79"} {
				if !s.outputContains(want) {
					t.Errorf("the log does not say %q:\n%s", want, s.output())
				}
			}
			if gens := j.generations(); len(gens) != 0 {
				t.Errorf("generations %v left by a job that was never checkpointed", gens)
			}

			// Without: it runs on; the failure is told loudly once.
			s = j.launch([]string{"--interval", "1s"}, job...)
			deadline := time.Now().Add(ckptTimeout)
			for !s.outputContains("failed again (2 in a row") {
				if s.exited() || time.Now().After(deadline) {
					t.Fatalf("no repeated checkpoint failure reported (%s):\n%s", s.status(), s.output())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if n := strings.Count(s.output(), loud); n != 1 {
				t.Errorf("the log says %q %d times, want once:\n%s", loud, n, s.output())
			}
			s.signal(syscall.SIGTERM)
			s.finish(exitStopped, ckptTimeout)
			if !s.outputContains("final checkpoint failed and it has no earlier one") {
				t.Errorf("the stop does not say there is no checkpoint to resume from:\n%s", s.output())
			}
		})
	}
}
