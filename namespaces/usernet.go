package namespaces

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// A job with a network namespace of its own reaches the outside (downloads,
// license servers, monitoring) through a user-mode network stack, as
// rootless containers do: pasta (passt) or slirp4netns, started by the
// supervisor, joins the namespace, adds an interface there and carries its
// traffic through ordinary sockets of the node. Whichever runs, the job
// sees the same addresses on every node (UserNetAddr on UserNetIf, the
// node itself at UserNetGateway), so that its own connections over that
// address restore on another node. Nothing reaches the job from outside:
// no port is forwarded to it.

// The job's side of a user-mode network.
const (
	UserNetIf      = "tap0"
	UserNetAddr    = "10.0.2.100"
	UserNetGateway = "10.0.2.2"
)

// UserNetEnv names the environment variable that picks the stack: pasta,
// slirp4netns, or none; unset, the first of them installed.
const UserNetEnv = "CKPT_APPTAINER_USERNET"

// userNetReady bounds the wait for the stack's interface.
const userNetReady = 5 * time.Second

// UserNetwork is a running user-mode network stack.
type UserNetwork struct {
	// Name is the program: pasta or slirp4netns.
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// userNetArgs are the stacks, in the order they are looked for, with the
// arguments that attach each to the namespaces of process pid.
var userNetArgs = []struct {
	name string
	args func(pid int) []string
}{
	{"pasta", func(pid int) []string {
		// --runas: as root, pasta would otherwise change to nobody,
		// who may not enter the job's user namespace.
		return []string{"--config-net", "--quiet", "--foreground", "--ipv4-only",
			"--runas", fmt.Sprintf("%d:%d", os.Geteuid(), os.Getegid()),
			"--ns-ifname", UserNetIf, "--address", UserNetAddr, "--netmask", "24", "--gateway", UserNetGateway,
			"--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none",
			"--userns", fmt.Sprintf("/proc/%d/ns/user", pid), "--netns", fmt.Sprintf("/proc/%d/ns/net", pid)}
	}},
	{"slirp4netns", func(pid int) []string {
		// Its defaults are the addresses above.
		return []string{"--configure", "--mtu=65520", "--disable-host-loopback",
			"--userns-path=" + fmt.Sprintf("/proc/%d/ns/user", pid), "--netns-type=path",
			fmt.Sprintf("/proc/%d/ns/net", pid), UserNetIf}
	}},
}

// StartUserNetwork connects the network namespace of process pid (the
// sandbox's init) to the outside through the stack $CKPT_APPTAINER_USERNET
// names, else the first installed. It returns nil, nil when there is none
// (the job then has loopback only) and waits until the interface is up.
func StartUserNetwork(pid int) (*UserNetwork, error) {
	name, path, err := UserNetStack()
	if err != nil || path == "" {
		return nil, err
	}
	for _, st := range userNetArgs {
		if st.name == name {
			return startUserNet(name, path, st.args(pid), pid)
		}
	}
	return nil, nil
}

// UserNetStack names the user-mode network stack a private network would
// get here and its path: the one $CKPT_APPTAINER_USERNET names, else the
// first installed; path is "" for none.
func UserNetStack() (name, path string, err error) {
	want := os.Getenv(UserNetEnv)
	if want == "none" {
		return "none", "", nil
	}
	for _, st := range userNetArgs {
		if want != "" && want != st.name {
			continue
		}
		path, err := exec.LookPath(st.name)
		if err != nil {
			if want != "" {
				return want, "", fmt.Errorf("%s=%s: %w", UserNetEnv, want, err)
			}
			continue
		}
		return st.name, path, nil
	}
	if want != "" {
		return want, "", fmt.Errorf("%s=%q: want pasta, slirp4netns or none", UserNetEnv, want)
	}
	return "", "", nil
}

func startUserNet(name, path string, args []string, pid int) (*UserNetwork, error) {
	var stderr bytes.Buffer
	u := &UserNetwork{Name: name, done: make(chan struct{})}
	u.cmd = &exec.Cmd{Path: path, Args: append([]string{name}, args...), Stderr: &stderr,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal is tied to the thread that started
		// the stack: it stays for as long as the stack runs.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := u.cmd.Start(); err != nil {
			started <- err
			close(u.done)
			return
		}
		started <- nil
		u.err = u.cmd.Wait()
		close(u.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	deadline := time.Now().Add(userNetReady)
	for !hasAddr(pid, UserNetAddr) {
		select {
		case <-u.done:
			return nil, fmt.Errorf("%s ended before the job's network was up (%v): %s", name, u.err, strings.TrimSpace(stderr.String()))
		default:
		}
		if time.Now().After(deadline) {
			u.Stop()
			return nil, fmt.Errorf("%s: no %s on %s after %v: %s", name, UserNetAddr, UserNetIf, userNetReady, strings.TrimSpace(stderr.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return u, nil
}

// hasAddr says whether the network namespace of pid has IPv4 address addr,
// as /proc/PID/net/fib_trie lists the local ones.
func hasAddr(pid int, addr string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/fib_trie", pid))
	return err == nil && bytes.Contains(b, []byte(addr+"\n"))
}

// Stop ends the stack; the job's network is loopback only after it.
func (u *UserNetwork) Stop() {
	if u == nil {
		return
	}
	if err := u.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return
	}
	<-u.done
}
