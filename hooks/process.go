package hooks

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// outputGrace is how long Run waits, after a hook and its process group
// are gone, for the end of its output: only a process that left the group
// (setsid) can still hold the pipe open, and it is not waited for longer.
const outputGrace = 2 * time.Second

// process is a started hook: its command, its stdin writer and the
// goroutine draining its output.
type process struct {
	cmd     *exec.Cmd
	stdin   *os.File
	outR    *os.File
	outDone chan struct{}
}

// start starts cmd in a process group of its own, feeding stdin to it and
// its stdout and stderr into out.
func start(cmd *exec.Cmd, stdin []byte, out *capture) (*process, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	p := &process{cmd: cmd, stdin: inW, outR: outR, outDone: make(chan struct{})}
	go func() {
		// A hook that does not read its stdin gets EPIPE here; that is
		// its business, not an error.
		inW.Write(stdin)
		inW.Close()
	}()
	go func() {
		out.readFrom(outR)
		close(p.outDone)
	}()
	return p, nil
}

// wait waits until the hook's main process exits or ctx is done, kills
// whatever is left of its process group, reaps it and collects its
// output. It returns when ctx ended the hook, or the zero time when the
// hook's main process exited by itself.
func (p *process) wait(ctx context.Context) (killedAt time.Time) {
	pid := p.cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		waitExited(pid)
		close(exited)
	}()
	select {
	case <-exited:
	case <-ctx.Done():
		killedAt = time.Now()
		unix.Kill(-pid, unix.SIGKILL)
		<-exited
	}
	// The leader is a zombie until Wait below reaps it, so the group id
	// cannot have been reused: this reaches the hook's own leftovers only.
	unix.Kill(-pid, unix.SIGKILL)
	p.cmd.Wait()
	p.stdin.Close()
	select {
	case <-p.outDone:
	case <-time.After(outputGrace):
		p.outR.Close()
		<-p.outDone
	}
	p.outR.Close()
	return killedAt
}

// waitExited blocks until process pid has exited, without reaping it.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}
