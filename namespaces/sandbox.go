package namespaces

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// InitArg is the first argument that makes the binary run as sandbox init.
// main must call InitMain when os.Args[1] == InitArg, before anything else.
const InitArg = "__ckpt-init"

// initThreadReserve is how many PIDs below pid_max are left to init's own
// threads.
const initThreadReserve = 1024

// Options configure a sandbox.
type Options struct {
	// Stdin, Stdout and Stderr are given to init and, through it, to the
	// job. Nil means the caller's own.
	Stdin, Stdout, Stderr *os.File
	// TimeNamespace puts the job's processes in a new time namespace.
	TimeNamespace bool
	// SharedIPC leaves the job in the supervisor's IPC namespace instead of
	// giving it one of its own, for sites whose jobs must share System V
	// IPC objects with processes outside the job. Such a job's System V
	// objects cannot be checkpointed.
	SharedIPC bool
	// PrivateNetwork gives the job a network namespace of its own, owned
	// by the job user namespace, with only loopback up: TCP between the
	// job's processes can then be checkpointed (TCP_REPAIR needs
	// CAP_NET_ADMIN over the namespace, which its owner has), and a
	// restart binds the job's ports again without meeting the node's.
	PrivateNetwork bool
	// MonotonicOffset and BoottimeOffset are added to the host's
	// CLOCK_MONOTONIC and CLOCK_BOOTTIME inside the time namespace. They
	// may be negative, as long as the resulting clocks are not.
	MonotonicOffset, BoottimeOffset time.Duration
	// OutliveMain keeps the job going after its main process exits with
	// status 0, for as long as any of its processes is left: the daemon of
	// an Apptainer instance outlives the command that started it. The
	// job's status is then 0.
	OutliveMain bool
}

// ExitStatus is how the job's main process ended.
type ExitStatus struct {
	// Code is the exit code, or 128+signal when a signal killed it.
	Code int `json:"code"`
	// Signal is the signal that killed it, or 0.
	Signal syscall.Signal `json:"signal,omitempty"`
}

// Sandbox is a running job sandbox, seen from the supervisor.
type Sandbox struct {
	cmd  *exec.Cmd
	ctrl *os.File
	enc  *json.Encoder

	// reqMu serializes requests: init answers one at a time.
	reqMu   sync.Mutex
	replies chan message
	// requests carries the job's own checkpoint requests (SIGUSR1 to
	// its PID 1); one pending request stands for any that follow it.
	requests chan time.Time

	exited  chan struct{} // closed when init has been reaped
	status  *ExitStatus   // the job's status, if init reported one
	waitErr error         // set before exited is closed

	// threadDone tells the goroutine that started init (and holds its OS
	// thread, to which the parent-death signal is tied) that it may go.
	threadDone chan struct{}
}

// Start creates the user, PID, mount and (unless opts.SharedIPC) IPC
// namespaces with init as PID 1 and returns once init is ready. Init dies with SIGKILL, and the whole sandbox
// with it, when the supervisor dies. Nothing of the job runs yet.
func Start(opts Options) (*Sandbox, error) {
	return start(opts, nil)
}

// start is Start; configure, when set, changes init's configuration before
// it is sent (tests use it to make init fail at start).
func start(opts Options, configure func(*initConfig)) (*Sandbox, error) {
	features, err := kernel.Probe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if opts.TimeNamespace && !features.Has(kernel.TimeNamespace) {
		return nil, fmt.Errorf("sandbox: time namespace: %s", features.Why(kernel.TimeNamespace))
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: control socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "sandbox-control")
	theirs := os.NewFile(uintptr(fds[1]), "sandbox-control-init")
	// Closed as soon as init holds its copy (below), so that an init that
	// dies at start ends the wait for "ready"; the defer is for the
	// returns before that.
	defer theirs.Close()

	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("sandbox: open own executable: %w", err)
	}
	defer exe.Close()

	preInit, err := preInitFile()
	if err != nil {
		ours.Close()
		return nil, err
	}
	defer preInit.Close()

	cmd := initCommand(opts, preInit, theirs, exe)
	s := &Sandbox{
		cmd:        cmd,
		ctrl:       ours,
		enc:        json.NewEncoder(ours),
		replies:    make(chan message, 1),
		requests:   make(chan time.Time, 1),
		exited:     make(chan struct{}),
		threadDone: make(chan struct{}),
	}

	// The parent-death signal fires when the thread that forked init exits,
	// not the process: keep that thread alive while init lives.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		started <- cmd.Start()
		<-s.threadDone
		runtime.UnlockOSThread()
	}()
	err = <-started
	theirs.Close()
	if err != nil {
		close(s.threadDone)
		ours.Close()
		return nil, fmt.Errorf("sandbox: create user/pid/mount/ipc/net namespaces: %w", err)
	}
	logrus.Debugf("sandbox: init started as host pid %d", cmd.Process.Pid)

	cfg := initConfig{
		TimeNamespace: opts.TimeNamespace,
		OutliveMain:   opts.OutliveMain,
		Loopback:      opts.PrivateNetwork,
		MonotonicNs:   int64(opts.MonotonicOffset),
		BoottimeNs:    int64(opts.BoottimeOffset),
		Kernel:        features,
	}
	if configure != nil {
		configure(&cfg)
	}
	ready := make(chan error, 1)
	go s.readLoop(ready)
	if err := s.enc.Encode(cfg); err != nil {
		s.Kill()
		<-s.exited
		return nil, fmt.Errorf("sandbox: configure init: %w", err)
	}
	if err := <-ready; err != nil {
		s.Kill()
		<-s.exited
		return nil, err
	}
	return s, nil
}

// initCommand builds the command that starts init: the pre-init program in
// new namespaces, which then executes this binary (fd 4) with InitArg.
func initCommand(opts Options, preInit, ctrl, exe *os.File) *exec.Cmd {
	pick := func(f, def *os.File) *os.File {
		if f != nil {
			return f
		}
		return def
	}
	cmd := &exec.Cmd{
		Path:       "/proc/self/fd/" + strconv.Itoa(int(preInit.Fd())),
		Args:       []string{"/proc/self/fd/" + strconv.Itoa(exeFd), InitArg},
		Env:        os.Environ(),
		Stdin:      pick(opts.Stdin, os.Stdin),
		Stdout:     pick(opts.Stdout, os.Stdout),
		Stderr:     pick(opts.Stderr, os.Stderr),
		ExtraFiles: []*os.File{ctrl, exe},
	}
	uid, gid := os.Getuid(), os.Getgid()
	flags := uintptr(syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS)
	if !opts.SharedIPC {
		// System V objects of the job live in an IPC namespace the job
		// user namespace owns: a checkpoint can list them all, and a
		// restart can give them back their ids.
		flags |= syscall.CLONE_NEWIPC
	}
	if opts.PrivateNetwork {
		flags |= syscall.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  flags,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		// Denying setgroups is what lets an unprivileged user write gid_map.
		GidMappingsEnableSetgroups: false,
		AmbientCaps:                initCaps(),
		Pdeathsig:                  syscall.SIGKILL,
		Setsid:                     true,
	}
	return cmd
}

// preInitFile returns a memfd holding the pre-init program, set up to move
// the new PID namespace's counter to just below the init thread reserve.
func preInitFile() (*os.File, error) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return nil, fmt.Errorf("sandbox: read pid_max: %w", err)
	}
	pidMax, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("sandbox: parse pid_max %q: %w", b, err)
	}
	if pidMax < 4*initThreadReserve {
		return nil, fmt.Errorf("sandbox: pid_max %d is too small for a sandbox (need %d)", pidMax, 4*initThreadReserve)
	}
	return kernel.ExecMemfd("ckpt-preinit", preInitELF(pidMax-initThreadReserve))
}

// readLoop reads init's messages until the control socket closes, then
// reaps init and records how the sandbox ended.
func (s *Sandbox) readLoop(ready chan<- error) {
	dec := json.NewDecoder(s.ctrl)
	isReady := false
	var readErr error
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
		switch {
		case m.Exit != nil:
			s.status = m.Exit
		case m.Ready:
			isReady = true
			ready <- nil
		case !isReady && m.Error != "":
			ready <- fmt.Errorf("sandbox: %s", m.Error)
			isReady = true // the error has been delivered
		case m.Reply:
			s.replies <- m
		case m.Checkpoint:
			select {
			case s.requests <- time.Now():
			default: // one is pending already
			}
		default:
			logrus.Debugf("sandbox: unexpected message from init: %+v", m)
		}
	}
	s.ctrl.Close()
	werr := s.cmd.Wait()
	close(s.threadDone)
	s.waitErr = s.finish(werr, readErr)
	if !isReady {
		if s.waitErr != nil {
			ready <- s.waitErr
		} else {
			ready <- errors.New("sandbox: init exited before it was ready")
		}
	}
	close(s.replies)
	close(s.exited)
}

// finish turns init's own wait status into the sandbox's result when init
// did not report the job's status.
func (s *Sandbox) finish(werr, readErr error) error {
	if s.status != nil {
		return nil
	}
	ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if werr != nil && !ok {
		return fmt.Errorf("sandbox: wait for init: %w", werr)
	}
	switch {
	case ws.Signaled():
		// Killing init kills every process of the namespace with it.
		sig := ws.Signal()
		s.status = &ExitStatus{Code: 128 + int(sig), Signal: sig}
		return nil
	case ws.ExitStatus() == preInitLastPIDFailed:
		return errors.New("sandbox: pre-init could not write /proc/sys/kernel/ns_last_pid in the new PID namespace")
	case ws.ExitStatus() == preInitExecFailed:
		return errors.New("sandbox: pre-init could not execute the supervisor binary")
	case readErr != nil:
		return fmt.Errorf("sandbox: read from init: %w (init exited with status %d)", readErr, ws.ExitStatus())
	default:
		return fmt.Errorf("sandbox: init exited with status %d without reporting the job's status", ws.ExitStatus())
	}
}

// call sends one request to init and returns its reply.
func (s *Sandbox) call(r request) (message, error) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	select {
	case <-s.exited:
		return message{}, errors.New("sandbox: init has exited")
	default:
	}
	if err := s.enc.Encode(r); err != nil {
		return message{}, fmt.Errorf("sandbox: send %s to init: %w", r.Op, err)
	}
	m, ok := <-s.replies
	if !ok {
		return message{}, fmt.Errorf("sandbox: init exited during %s", r.Op)
	}
	if m.Error != "" {
		return m, fmt.Errorf("sandbox: %s", m.Error)
	}
	return m, nil
}

// InitPID returns the host PID of init.
func (s *Sandbox) InitPID() int { return s.cmd.Process.Pid }

// Run starts the user's command as init's child, with no capabilities. argv[0]
// is looked up in the PATH of env when it has no slash; dir is its working
// directory ("" for init's). It returns the process's host and sandbox PIDs.
// The first process started by Run or SpawnStub is the job's main process.
func (s *Sandbox) Run(argv, env []string, dir string) (hostPID, nsPID int, err error) {
	if len(argv) == 0 {
		return 0, 0, errors.New("sandbox: run: empty command")
	}
	m, err := s.call(request{Op: opRun, Argv: argv, Env: env, Dir: dir})
	if err != nil {
		return 0, 0, err
	}
	logrus.Debugf("sandbox: %s started as pid %d (host pid %d)", argv[0], m.PID, m.HostPID)
	return m.HostPID, m.PID, nil
}

// SpawnStub starts the static executable elf as init's child with sandbox
// PID nsPID, holding in its ambient set the capabilities a restorer needs in
// the job user namespace (StubCaps), with init's stdin, stdout and stderr
// and no other fd. It returns the stub's host PID.
//
// The PID counter is then left at after (when not 0), above the pids the
// restore has yet to give with clone3: a thread the Go runtime of init
// starts later, or any other task of the namespace, takes a pid there.
func (s *Sandbox) SpawnStub(elf []byte, nsPID, after int) (hostPID int, err error) {
	if nsPID < 2 {
		return 0, fmt.Errorf("sandbox: spawn stub: pid %d cannot be given to a job process", nsPID)
	}
	m, err := s.call(request{Op: opSpawn, ELF: elf, PID: nsPID, After: after})
	if err != nil {
		return 0, err
	}
	return m.HostPID, nil
}

// Wait blocks until the job's main process has exited and init with it, and
// returns the job's status. A sandbox killed with Kill reports SIGKILL.
func (s *Sandbox) Wait() (ExitStatus, error) {
	<-s.exited
	if s.waitErr != nil {
		return ExitStatus{}, s.waitErr
	}
	return *s.status, nil
}

// Kill sends SIGKILL to init; the kernel then kills every process of the
// PID namespace.
func (s *Sandbox) Kill() error {
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("sandbox: kill init: %w", err)
	}
	return nil
}

// ForwardSignal delivers sig to the job's main process.
func (s *Sandbox) ForwardSignal(sig syscall.Signal) error {
	_, err := s.call(request{Op: opSignal, Signal: int(sig)})
	return err
}

// CheckpointRequests delivers the checkpoint requests the job makes of
// itself, by sending SIGUSR1 to its PID 1, as the time each arrived.
func (s *Sandbox) CheckpointRequests() <-chan time.Time { return s.requests }
