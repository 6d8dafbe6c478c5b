package namespaces

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// caughtSignals are caught by init so that they do not end it: as the PID
// namespace's init, a signal from outside the namespace with the default
// action would kill it and with it the whole job. The supervisor forwards
// signals through the control protocol (opSignal); a signal sent to init
// directly comes from outside the job, typically a batch system signalling
// every process of a job step (Slurm's proctrack does), and is dropped.
// Forwarding it as well would hand the job a SIGTERM the supervisor answers
// with a final checkpoint instead. SIGUSR1 is the exception: it is how a
// job asks for a checkpoint of itself (`kill -USR1 1`), and init passes it
// on to the supervisor as a request, which merges it with its own SIGUSR1
// when a batch system sent both.
var caughtSignals = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT,
}

// nsLastPID is the PID counter of the caller's own PID namespace.
const nsLastPID = "/proc/sys/kernel/ns_last_pid"

// initServer is the state of sandbox init.
type initServer struct {
	enc   *json.Encoder
	encMu sync.Mutex

	// reqMu is held while a request is handled, up to its reply, so that
	// init never exits between starting a process and saying so.
	reqMu sync.Mutex

	// mu protects mainPID: it is held from fork to record, so the reaper
	// never sees the main process exit before it is known.
	mu      sync.Mutex
	mainPID int
	// outliveMain is the configuration's OutliveMain; orphaned is set once
	// the main process has exited 0 and the job goes on with the
	// processes it left.
	outliveMain bool
	orphaned    bool

	// hostProc is the host's /proc, opened before the sandbox's own was
	// mounted over it: there a child's pidfd shows the child's host PID.
	hostProc int

	// timens is the job's time namespace when tasks enter it through the
	// entry program (kernels that refuse a vfork child there), else -1;
	// timensJob and timensStub are that program, dropping its capability
	// before the job's command and keeping the stub's.
	timens                int
	timensJob, timensStub *os.File

	spawns chan spawnJob
}

// spawnJob is one request for the spawner thread.
type spawnJob struct {
	req  request
	done chan spawnResult
}

type spawnResult struct {
	pid, hostPID int
	err          error
}

// InitMain runs sandbox init. It never returns: init exits when the job's
// main process has exited, with the job's exit code.
func InitMain() {
	err := runInit()
	// runInit returns only when init could not set the sandbox up or lost
	// its supervisor; either way the namespace dies with it.
	fmt.Fprintf(os.Stderr, "ckpt-apptainer init: %v\n", err)
	os.Exit(1)
}

func runInit() error {
	// Init mounts over /proc and reaps everything: outside its own PID
	// namespace it would do that to the caller's system.
	if os.Getpid() != 1 {
		return errors.New("not PID 1 of a new PID namespace; this mode is started by the supervisor only")
	}
	unix.Close(exeFd)
	ctrl := os.NewFile(controlFd, "sandbox-control")
	dec := json.NewDecoder(ctrl)
	s := &initServer{enc: json.NewEncoder(ctrl), spawns: make(chan spawnJob), timens: -1}

	var cfg initConfig
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	if cfg.Kernel == nil {
		return errors.New("read configuration: no kernel features")
	}
	kernel.Adopt(cfg.Kernel)
	// Whatever the supervisor's own parent leaked to it must not reach the
	// job or a stub.
	if err := markCloseOnExec(controlFd); err != nil {
		return fmt.Errorf("mark inherited fds close-on-exec: %w", err)
	}
	// Before setup: the runtime starts a signal thread for this, and all of
	// init's threads must be made while the PID counter is at the top.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, caughtSignals...)...)
	s.outliveMain = cfg.OutliveMain
	if err := s.setup(cfg); err != nil {
		s.send(message{Error: err.Error()})
		return err
	}
	if err := s.send(message{Ready: true}); err != nil {
		return err
	}
	go s.signalLoop(sigs)
	return s.serve(dec)
}

// markCloseOnExec marks every descriptor from first up close-on-exec:
// with close_range where the kernel has CLOSE_RANGE_CLOEXEC (5.11), else one
// by one as /proc/self/fd lists them.
func markCloseOnExec(first int) error {
	if kernel.Has(kernel.CloseRangeCloexec) {
		return unix.CloseRange(uint(first), ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < first {
			continue
		}
		// The directory's own descriptor is listed, and closed by now.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && err != unix.EBADF {
			return fmt.Errorf("fd %d: %w", fd, err)
		}
	}
	return nil
}

// setup prepares the mount namespace, init's threads and the spawner thread.
func (s *initServer) setup(cfg initConfig) error {
	hostProc, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open host /proc: %w", err)
	}
	s.hostProc = hostProc
	// Mounts made inside must not leak out, and /proc must show this PID
	// namespace: Apptainer and the checkpoint engine resolve PIDs through it.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / rslave: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if cfg.Loopback {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	// The pre-init moved the PID counter to the top: every thread made now
	// gets a PID there, and the Go runtime reuses idle threads instead of
	// making new ones later, when PIDs belong to the job. The counter stays
	// there until the first job process is started.
	if cfg.TimeNamespace && !kernel.Has(kernel.TimeNamespaceVfork) {
		// Before the threads are warmed: the namespace is made on a
		// thread of its own that exits afterwards.
		if err := s.makeTimeNamespace(time.Duration(cfg.MonotonicNs), time.Duration(cfg.BoottimeNs)); err != nil {
			return err
		}
	}
	warmThreads(8 + runtime.GOMAXPROCS(0))

	setupErr := make(chan error, 1)
	go s.spawner(cfg, setupErr)
	return <-setupErr
}

// warmThreads makes the Go runtime create n OS threads now. A goroutine
// locked to its thread keeps that thread to itself, so n of them blocked at
// once need n threads; unlocked afterwards, the threads stay idle for reuse.
func warmThreads(n int) {
	var locked, done sync.WaitGroup
	release := make(chan struct{})
	locked.Add(n)
	done.Add(n)
	for range n {
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			locked.Done()
			<-release
			runtime.UnlockOSThread()
		}()
	}
	locked.Wait()
	close(release)
	done.Wait()
}

// writeLastPID sets the PID counter of init's PID namespace: the next
// process gets the first free PID after last.
func writeLastPID(last int) error {
	if err := os.WriteFile(nsLastPID, []byte(strconv.Itoa(last)), 0); err != nil {
		return fmt.Errorf("set ns_last_pid: %w", err)
	}
	return nil
}

// send writes one message to the supervisor.
func (s *initServer) send(m message) error {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	if err := s.enc.Encode(m); err != nil {
		return fmt.Errorf("write to supervisor: %w", err)
	}
	return nil
}

// serve answers the supervisor's requests until the control socket closes.
func (s *initServer) serve(dec *json.Decoder) error {
	for {
		var r request
		if err := dec.Decode(&r); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("supervisor closed the control socket")
			}
			return fmt.Errorf("read request: %w", err)
		}
		s.reqMu.Lock()
		reply := message{Reply: true}
		switch r.Op {
		case opRun, opSpawn:
			done := make(chan spawnResult, 1)
			s.spawns <- spawnJob{req: r, done: done}
			res := <-done
			reply.PID, reply.HostPID = res.pid, res.hostPID
			if res.err != nil {
				reply.Error = res.err.Error()
			}
		case opSignal:
			if err := s.signalMain(syscall.Signal(r.Signal)); err != nil {
				reply.Error = err.Error()
			}
		default:
			reply.Error = fmt.Sprintf("unknown request %q", r.Op)
		}
		err := s.send(reply)
		s.reqMu.Unlock()
		if err != nil {
			return err
		}
	}
}

// signalMain delivers sig to the job's main process, or, once the main
// process has left the job to its orphans, to each of init's children.
func (s *initServer) signalMain(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.orphaned {
		return signalChildren(sig)
	}
	if s.mainPID == 0 {
		return fmt.Errorf("signal %v: no job process started", sig)
	}
	if err := unix.Kill(s.mainPID, sig); err != nil {
		return fmt.Errorf("signal %v to pid %d: %w", sig, s.mainPID, err)
	}
	return nil
}

// signalLoop reaps children on SIGCHLD and drops the other caught signals
// (see caughtSignals).
func (s *initServer) signalLoop(sigs <-chan os.Signal) {
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			s.reap()
		case syscall.SIGUSR1:
			if err := s.send(message{Checkpoint: true}); err != nil {
				fmt.Fprintf(os.Stderr, "sandbox init: checkpoint request: %v\n", err)
			}
		}
	}
}

// reap collects every exited child. When the main process is among them,
// init reports its status and exits; the kernel then kills the rest of the
// namespace. With OutliveMain, a main process that exits 0 leaves the job
// to its orphans, and init exits 0 when the last of them has: an instance
// that `apptainer instance stop` ended has no status of its own.
func (s *initServer) reap() {
	for {
		var ws unix.WaitStatus
		s.mu.Lock()
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
		isMain := pid > 0 && pid == s.mainPID
		s.mu.Unlock()
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECHILD && s.isOrphaned() {
			s.exit(ExitStatus{})
		}
		if err != nil || pid <= 0 {
			return
		}
		if !(ws.Exited() || ws.Signaled()) {
			continue
		}
		st := ExitStatus{Code: ws.ExitStatus()}
		if ws.Signaled() {
			st = ExitStatus{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
		}
		switch {
		case isMain && s.outliveMain && st.Code == 0 && st.Signal == 0:
			s.mu.Lock()
			s.orphaned = true
			s.mu.Unlock()
		case isMain:
			s.exit(st)
		}
	}
}

func (s *initServer) isOrphaned() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.orphaned
}

// exit reports the job's status and ends init; the kernel then kills the
// rest of the namespace.
func (s *initServer) exit(st ExitStatus) {
	s.reqMu.Lock() // never released: init exits
	_ = s.send(message{Exit: &st})
	os.Exit(st.Code)
}

// signalChildren delivers sig to each of init's children.
func signalChildren(sig syscall.Signal) error {
	kids, err := proc.Children(1)
	if err != nil {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	for _, pid := range kids {
		unix.Kill(pid, sig)
	}
	return nil
}

// spawner owns the OS thread every job process is forked from. Its
// capability sets and securebits decide what the children inherit, and in
// a time namespace, only this thread's children enter it
// (time_for_children is per thread). It therefore never unlocks.
func (s *initServer) spawner(cfg initConfig, setupErr chan<- error) {
	runtime.LockOSThread()
	if err := dropThreadInheritance(); err != nil {
		setupErr <- err
		return
	}
	if cfg.TimeNamespace && s.timens < 0 {
		if err := enterTimeNamespace(time.Duration(cfg.MonotonicNs), time.Duration(cfg.BoottimeNs)); err != nil {
			setupErr <- err
			return
		}
	}
	setupErr <- nil
	for job := range s.spawns {
		var res spawnResult
		switch job.req.Op {
		case opRun:
			res.pid, res.hostPID, res.err = s.run(job.req)
		case opSpawn:
			res.pid, res.hostPID, res.err = s.spawnStub(job.req)
		}
		job.done <- res
	}
}

// run starts the user's command. Precondition: on the spawner thread.
func (s *initServer) run(r request) (pid, hostPID int, err error) {
	if len(r.Argv) == 0 {
		return 0, 0, errors.New("run: empty command")
	}
	path, err := LookPath(r.Argv[0], r.Env, r.Dir)
	if err != nil {
		return 0, 0, fmt.Errorf("exec %s: %w", r.Argv[0], err)
	}
	attr := &syscall.ProcAttr{
		Dir:   r.Dir,
		Env:   r.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{},
	}
	s.mu.Lock()
	first := s.mainPID == 0
	s.mu.Unlock()
	if first {
		// Until now the PID counter stayed at the top, where the runtime's
		// threads went; the job's first process gets the first free PID.
		if err := writeLastPID(1); err != nil {
			return 0, 0, err
		}
	}
	execPath, argv := path, r.Argv
	if s.timens >= 0 {
		execPath, argv = s.throughTimensEntry(attr, s.timensJob, path, argv)
		// The entry program needs the capability to join the namespace;
		// it drops it before the job's command runs.
		attr.Sys.AmbientCaps = []uintptr{unix.CAP_SYS_ADMIN}
	}
	pid, hostPID, err = s.forkExec(execPath, argv, attr, 0)
	if err != nil {
		if r.Dir != "" && errors.Is(err, syscall.ENOENT) {
			if _, serr := os.Stat(r.Dir); serr != nil {
				return 0, 0, fmt.Errorf("exec %s: working directory %s: %w", r.Argv[0], r.Dir, serr)
			}
		}
		return 0, 0, fmt.Errorf("exec %s: %w", r.Argv[0], err)
	}
	return pid, hostPID, nil
}

// forkExec starts a child, finds its host PID and makes it the job's main
// process if there is none yet. The first PID after ns_last_pid is taken
// unless want is not zero and the kernel gave another: then the child is
// killed and an error returned. Precondition: on the spawner thread.
func (s *initServer) forkExec(path string, argv []string, attr *syscall.ProcAttr, want int) (pid, hostPID int, err error) {
	pidfd := -1
	if kernel.Has(kernel.ClonePidfd) {
		attr.Sys.PidFD = &pidfd
	}
	// Held until the child is recorded: the reaper takes it too, so the
	// child cannot vanish before its host PID is read.
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, err = syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, 0, err
	}
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	if want != 0 && pid != want {
		// Something forked between the ns_last_pid write and this fork.
		unix.Kill(pid, unix.SIGKILL)
		return 0, 0, fmt.Errorf("the kernel gave pid %d instead", pid)
	}
	if pidfd >= 0 {
		hostPID, err = s.hostPIDOf(pidfd)
	} else {
		hostPID, err = s.hostPIDOfChild(pid)
	}
	if err != nil {
		unix.Kill(pid, unix.SIGKILL)
		return 0, 0, err
	}
	if s.mainPID == 0 {
		s.mainPID = pid
	}
	return pid, hostPID, nil
}

// hostPIDOf reads the host PID of a child from its pidfd's fdinfo in the
// host /proc.
func (s *initServer) hostPIDOf(pidfd int) (int, error) {
	fd, err := unix.Openat(s.hostProc, "self/fdinfo/"+strconv.Itoa(pidfd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open host fdinfo of pidfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "fdinfo")
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, fmt.Errorf("read host fdinfo of pidfd: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("host pid of child: bad fdinfo line %q", line)
			}
			return n, nil
		}
	}
	return 0, errors.New("host pid of child: no Pid line in pidfd fdinfo")
}

// hostPIDOfChild finds the host PID of the child the calling thread
// forked with sandbox PID pid, on kernels without CLONE_PIDFD: among the
// thread's children in the host /proc, the one whose innermost PID is pid.
// Precondition: on the spawner thread, with the child not yet reaped.
func (s *initServer) hostPIDOfChild(pid int) (int, error) {
	fd, err := unix.Openat(s.hostProc, "thread-self/children", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("host pid of child %d: open host /proc/thread-self/children: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), "children")
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("host pid of child %d: %w", pid, err)
	}
	for _, w := range strings.Fields(string(b)) {
		host, err := strconv.Atoi(w)
		if err != nil {
			continue
		}
		st, err := proc.ReadStatusAt(s.hostProc, w)
		if err != nil {
			continue
		}
		if inner, err := st.NSPid(); err == nil && inner == pid {
			return host, nil
		}
	}
	return 0, fmt.Errorf("host pid of child %d: not among the spawner's children (%s)", pid, strings.TrimSpace(string(b)))
}

// spawnStub starts a restore stub with PID r.PID. Precondition: on the
// spawner thread, which also serializes the use of ns_last_pid.
func (s *initServer) spawnStub(r request) (pid, hostPID int, err error) {
	if _, err := os.Stat("/proc/" + strconv.Itoa(r.PID)); err == nil {
		return 0, 0, fmt.Errorf("spawn stub: pid %d is in use", r.PID)
	}
	f, err := kernel.ExecMemfd("ckpt-stub", r.ELF)
	if err != nil {
		return 0, 0, fmt.Errorf("spawn stub: %w", err)
	}
	defer f.Close()
	attr := &syscall.ProcAttr{
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{AmbientCaps: StubCaps()},
	}
	if err := writeLastPID(r.PID - 1); err != nil {
		return 0, 0, fmt.Errorf("spawn stub: %w", err)
	}
	path, argv := kernel.ProcPath(f), []string{"ckpt-stub"}
	if s.timens >= 0 {
		attr.Files = append(attr.Files, f.Fd()) // fd 4 of the entry program
		path, argv = s.throughTimensEntry(attr, s.timensStub, "/proc/self/fd/"+strconv.Itoa(timensEntryExeFd), argv)
	}
	pid, hostPID, err = s.forkExec(path, argv, attr, r.PID)
	if err != nil {
		return 0, 0, fmt.Errorf("spawn stub with pid %d: %w", r.PID, err)
	}
	if s.timens >= 0 {
		// The entry program still has to exec the stub, and the
		// supervisor takes the process as a stub the moment it hears.
		if err := waitExec(pid, f, stubExecTimeout); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			return 0, 0, fmt.Errorf("spawn stub with pid %d: %w", r.PID, err)
		}
	}
	if r.After > 0 {
		if err := writeLastPID(r.After); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			return 0, 0, fmt.Errorf("spawn stub with pid %d: %w", r.PID, err)
		}
	}
	return pid, hostPID, nil
}

// LookPath finds the executable argv0 as execvp would with the PATH of
// env: names with a slash are taken as they are (relative to dir when
// relative), and a match in a relative PATH entry is returned relative to
// dir.
func LookPath(argv0 string, env []string, dir string) (string, error) {
	if strings.Contains(argv0, "/") {
		return argv0, nil
	}
	pathVar := "/usr/local/bin:/usr/bin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	for _, d := range filepath.SplitList(pathVar) {
		if d == "" {
			d = "."
		}
		cand := filepath.Join(d, argv0)
		check := cand
		if !filepath.IsAbs(cand) && dir != "" {
			check = filepath.Join(dir, cand)
		}
		if fi, err := os.Stat(check); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			if !filepath.IsAbs(cand) {
				// Keep it relative to the job's directory, where exec runs.
				return "./" + cand, nil
			}
			return cand, nil
		}
	}
	return "", errors.New("executable file not found in $PATH")
}
