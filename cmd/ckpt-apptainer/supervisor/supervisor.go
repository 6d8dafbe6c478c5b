package supervisor

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	units "github.com/docker/go-units"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/cgroup"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
	"github.com/ckpt-apptainer/ckpt-apptainer/hooks"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

// exitCheckpointed is the supervisor's exit status when it stopped the job
// on purpose (SIGTERM, --signal, `checkpoint --kill`): 128+SIGTERM, what a
// batch system expects from a job that ended on SIGTERM. The log says
// whether the final checkpoint made it; either way `run` or `restart`
// resumes the job from its newest good generation.
const exitCheckpointed = 128 + int(syscall.SIGTERM)

// supervisor owns one running job: its sandbox, cgroup, checkpoint store,
// timer, control socket and signals.
type supervisor struct {
	// opts are the settings the job was launched or restarted with.
	opts   Options
	log    logrus.FieldLogger
	dir    string
	store  *image.Store
	unlock func()
	cg     *cgroup.Cgroup // nil: ptrace-only
	sb     *namespaces.Sandbox
	// usernet carries a private network's traffic to the outside; nil
	// for the node's network, or loopback only.
	usernet *namespaces.UserNetwork
	// timeNamespace says the job has a time namespace of its own, whose
	// clocks checkpoints record.
	timeNamespace bool
	// cpuSeen is the CPU features of every node the job ran on, which
	// checkpoints record.
	cpuSeen *image.CPU
	// localLimit is --local-limit in bytes.
	localLimit int64
	// codec is how page files are compressed (--compress): image.CodecZstd
	// or "".
	codec  string
	job    image.Job
	jobPID int // host pid of the job's main process
	// container is set for a job that runs Apptainer; appCg is the
	// sub-cgroup its application is frozen in.
	container *containerJob
	appCg     *cgroup.Cgroup
	interval  time.Duration
	keep      int
	buffer    int64 // dump buffer in bytes; <0: engine default
	// stopSignal is --signal: like SIGTERM, it ends the job with a final
	// checkpoint. requeue is --requeue.
	stopSignal syscall.Signal
	requeue    bool
	// requeueNow is decided when the job ends: it was stopped by a signal
	// (or died on one after a stop signal came) and --requeue was given.
	requeueNow bool
	// hooks are the site's and the user's lifecycle hooks (userHooks is
	// the --hooks file); imageHooksCfg those of a container's image, read
	// once (imageHooksRead).
	hooks          *hooks.Config
	userHooks      string
	imageHooksCfg  *hooks.Config
	imageHooksRead bool
	// answering counts control requests being served: a checkpoint
	// --kill ends the job, and the supervisor must not exit before it
	// has told the client.
	answering sync.WaitGroup

	// mu serializes checkpoints; stopped is set once a checkpoint ended the
	// job on purpose, so the exit status says so; lastFailed tells whether
	// the final checkpoint before that failed.
	mu         sync.Mutex
	stopped    bool
	lastFailed bool
	// launched says the job was launched, not restored, by this
	// supervisor. notCheckpointable is set when --require-checkpoint ended
	// the job.
	launched          bool
	notCheckpointable bool

	// state is what `status` shows and what messages about the job's
	// newest generation name. It has a lock of its own: mu is held for a
	// whole checkpoint.
	state jobState
	// tracker tells the pages the job wrote since a checkpoint, for
	// incremental checkpoints and pre-copies (nil: not asked for). armedGen
	// is the generation whose checkpoint armed it on every job process,
	// and was committed: the next incremental checkpoint on it may trust
	// it. 0: none may.
	tracker  *writetrack.Tracker
	armedGen int
}

// openSupervisor resolves and locks the checkpoint directory.
func openSupervisor(o Options) (*supervisor, error) {
	dir, err := CkptDir(o.CkptDir, o.Instance)
	if err != nil {
		return nil, err
	}
	st, err := image.OpenStore(dir, true)
	if err != nil {
		return nil, err
	}
	if err := st.Pin(); err != nil {
		return nil, err
	}
	// A restart verifies the page files as it reads them.
	st.DeferPages = true
	unlock, err := st.Lock()
	if err != nil {
		return nil, err
	}
	if err := st.CleanStale(); err != nil {
		logrus.Warnf("checkpoint directory %s: %v", dir, err)
	}
	if o.reuseSettings {
		if err := reuseSettings(st, &o); err != nil {
			unlock()
			return nil, err
		}
	}
	s := &supervisor{
		log:      logrus.StandardLogger(),
		dir:      dir,
		store:    st,
		unlock:   unlock,
		opts:     o,
		interval: o.Interval,
		keep:     o.Keep,
		buffer:   o.DumpBuffer,
	}
	if s.buffer > 0 {
		s.buffer <<= 20
	}
	if s.localLimit, err = units.RAMInBytes(o.LocalLimit); err != nil || s.localLimit <= 0 {
		unlock()
		return nil, fmt.Errorf("--local-limit %q: want a size such as 512MiB or 4GiB", o.LocalLimit)
	}
	if o.Incremental || o.PreCopy {
		s.tracker = writetrack.NewTracker(writetrack.Choose(kernel.Current()))
	}
	if s.codec, err = pageCodec(o.Compress); err != nil {
		unlock()
		return nil, err
	}
	if o.Net == "" {
		o.Net = NetHost
	}
	if err := checkNet(o.Net); err != nil {
		unlock()
		return nil, err
	}
	if o.Interval < 0 {
		unlock()
		return nil, fmt.Errorf("--interval %v: must be 0 or more", o.Interval)
	}
	if o.Signal != "" {
		if s.stopSignal, err = parseStopSignal(o.Signal); err != nil {
			unlock()
			return nil, err
		}
	}
	if err := s.loadHooks(o.Hooks); err != nil {
		unlock()
		return nil, err
	}
	s.requeue = o.Requeue
	if s.requeue && os.Getenv("SLURM_JOB_ID") == "" {
		s.log.Warn("--requeue: $SLURM_JOB_ID is not set, so a stopped job cannot be requeued; it is resumed by the next `ckpt-apptainer run`")
	}
	return s, nil
}

// makeCgroup creates the job cgroup, or returns nil when the job is to be
// stopped with ptrace alone.
func (s *supervisor) makeCgroup() error {
	if s.opts.NoCgroup {
		s.log.Info("no job cgroup (--no-cgroup): checkpoints stop the job with ptrace alone")
		return nil
	}
	// The pid names the owner (removeStaleCgroups relies on it); the
	// suffix keeps a reused pid from meeting a dead owner's cgroup.
	name := fmt.Sprintf("%s%d-%06x", JobCgroupPrefix, os.Getpid(), rand.Uint32()&0xffffff)
	cg, err := cgroup.Create(cgroup.Options{Parent: s.opts.CgroupParent, Name: name})
	if errors.Is(err, cgroup.ErrNoWritableCgroup) && s.opts.CgroupParent == "" {
		s.log.Infof("%v: checkpoints stop the job with ptrace alone", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("job cgroup: %w (use --cgroup-parent to name a writable cgroup, or --no-cgroup)", err)
	}
	s.cg = cg
	s.log.Debugf("job cgroup %s (%s)", cg.Path(), cg.Version())
	if !cg.CanFreeze() {
		s.log.Infof("job cgroup %s: %s: checkpoints stop the job with ptrace alone", cg.Path(),
			kernel.Current().Lacks(kernel.CgroupV2Freezer))
	}
	removeStaleCgroups(filepath.Dir(cg.Path()), s.log)
	return nil
}

// cgroupMoveHint says why a process could not be moved into a job cgroup
// made under parent, and what to do: the kernel moves a process only for a
// user who may write cgroup.procs of the closest common ancestor of its
// cgroup and the new one, so a supervisor started outside the delegated
// cgroup cannot put its job inside it.
func cgroupMoveHint(parent string) string {
	return fmt.Sprintf(`the kernel lets you move a process between two cgroups only when you may write cgroup.procs of their closest common ancestor, and the supervisor's own cgroup and %[1]s have none you may write. Either
  - start ckpt-apptainer from a shell inside it: echo $$ > %[1]s/cgroup.procs (or a child of it), then run the command again;
  - or have systemd make a delegated cgroup and run it there: systemd-run --user --scope -p Delegate=yes ckpt-apptainer ...;
  - or leave out --cgroup-parent (and $CKPT_APPTAINER_CGROUP_PARENT): the job is then stopped with ptrace alone`, parent)
}

// JobCgroupPrefix starts the name of every job cgroup: ckpt-<supervisor
// pid>-<random>.
const JobCgroupPrefix = "ckpt-"

// removeStaleCgroups removes job cgroups next to ours whose supervisor is
// gone (SIGKILL, node failure): their jobs died with it, but nobody removed
// the directories. A cgroup whose owner pid is alive is left alone, even if
// that pid now belongs to another program.
func removeStaleCgroups(parent string, log logrus.FieldLogger) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, JobCgroupPrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, JobCgroupPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue
		}
		cg, err := cgroup.Load(filepath.Join(parent, name))
		if err == nil {
			err = cg.Remove()
		}
		if err != nil {
			log.Debugf("stale job cgroup %s: %v", name, err)
			continue
		}
		log.Debugf("removed stale job cgroup %s", name)
	}
}

// startSandbox starts the sandbox and puts its init into the job cgroup
// before anything of the job runs.
func (s *supervisor) startSandbox(opts namespaces.Options) error {
	sb, err := namespaces.Start(opts)
	if err != nil {
		return err
	}
	s.sb = sb
	s.timeNamespace = opts.TimeNamespace
	if s.cg != nil {
		if err := s.cg.AddProc(sb.InitPID()); err != nil {
			sb.Kill()
			err = fmt.Errorf("move the sandbox into cgroup %s: %w", s.cg.Path(), err)
			if errors.Is(err, fs.ErrPermission) {
				err = fmt.Errorf("%w\n%s", err, cgroupMoveHint(filepath.Dir(s.cg.Path())))
			}
			return err
		}
	}
	if opts.PrivateNetwork {
		return s.connectNetwork()
	}
	return nil
}

// connectNetwork gives a private network a way out through a user-mode
// stack, before any job process runs, so that a restored job finds its
// interface's address again.
func (s *supervisor) connectNetwork() error {
	if !kernel.Has(kernel.PidfdGetfd) {
		// Without it descriptors are copied out of a process over an
		// abstract unix socket, which exists per network namespace.
		s.sb.Kill()
		return fmt.Errorf("--net private: %s: the supervisor could not copy the descriptors of a job in a network of its own; use --net host here", kernel.Current().Lacks(kernel.PidfdGetfd))
	}
	u, err := namespaces.StartUserNetwork(s.sb.InitPID())
	if err != nil {
		s.sb.Kill()
		return fmt.Errorf("the job's network (--net private): %w", err)
	}
	s.usernet = u
	if u == nil {
		why := "neither pasta nor slirp4netns is installed"
		if os.Getenv(namespaces.UserNetEnv) == "none" {
			why = namespaces.UserNetEnv + "=none"
		}
		s.log.Infof("the job's network (--net private): loopback only, no way out (%s)", why)
		return nil
	}
	s.log.Infof("the job's network (--net private): loopback and %s, the job at %s, the node at %s; nothing outside reaches the job",
		u.Name, namespaces.UserNetAddr, namespaces.UserNetGateway)
	return nil
}

// close releases the cgroup, the control socket, write tracking and the
// directory lock.
func (s *supervisor) close() {
	s.usernet.Stop()
	s.dropCgroup()
	if s.tracker != nil {
		s.tracker.Close()
	}
	os.Remove(controlPath(s.dir))
	if path, err := runtimeControlPath(s.dir, false); err == nil {
		os.Remove(path)
	}
	s.unlock()
}

// dropCgroup removes the job cgroup, if there is one.
func (s *supervisor) dropCgroup() {
	if s.cg == nil {
		return
	}
	if err := s.cg.Remove(); err != nil {
		s.log.Warnf("remove job cgroup: %v", err)
	}
	s.cg, s.appCg = nil, nil
}

// supervise runs until the job ends and returns the supervisor's exit
// status: the job's own, or exitCheckpointed when a checkpoint stopped it.
func (s *supervisor) supervise() error {
	ln, err := listenControl(s.dir, s)
	if err != nil {
		s.sb.Kill()
		return err
	}
	defer ln.Close()

	sigs := make(chan os.Signal, 4)
	caught := []os.Signal{syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR2}
	if s.stopSignal != 0 {
		caught = append(caught, s.stopSignal)
	}
	signal.Notify(sigs, caught...)
	defer signal.Stop(sigs)

	exited := make(chan namespaces.ExitStatus, 1)
	go func() {
		st, err := s.sb.Wait()
		if err != nil {
			s.log.Errorf("job: %v", err)
			st = namespaces.ExitStatus{Code: 1}
		}
		exited <- st
	}()

	var tick <-chan time.Time
	if s.interval > 0 {
		t := time.NewTicker(s.interval)
		defer t.Stop()
		tick = t.C
	}
	var first <-chan time.Time
	now, firstAt := time.Now(), time.Time{}
	if d := s.firstCheckpointDelay(); d > 0 {
		s.log.Infof("first checkpoint in %v, to find out early whether the job can be checkpointed", d)
		first, firstAt = time.After(d), now.Add(d)
	}
	s.state.begin(now, firstAt)
	preempted := false
	for {
		select {
		case st := <-exited:
			s.waitAnswers()
			// A batch system that signals every process of the job may
			// have ended the job before the supervisor read its own copy.
			for len(sigs) > 0 {
				if s.isStopSignal((<-sigs).(syscall.Signal)) {
					preempted = true
				}
			}
			return s.finish(st, preempted)
		case <-first:
			first = nil
			s.state.firstTaken()
			if !s.isStopped() {
				s.checkpointLogged(false)
			}
		case <-tick:
			if !s.isStopped() {
				s.checkpointLogged(false)
			}
		case sig := <-sigs:
			switch sig := sig.(syscall.Signal); {
			case s.isStopSignal(sig):
				preempted = true
				if s.isStopped() {
					continue // a repeated signal while the job is going down
				}
				s.stopWithCheckpoint(sig)
				tick = nil
			case sig == syscall.SIGUSR1:
				if !s.isStopped() {
					s.checkpointLogged(false)
				}
			default:
				if err := s.sb.ForwardSignal(sig); err != nil {
					s.log.Debugf("forward %v: %v", sig, err)
				}
			}
		case at := <-s.sb.CheckpointRequests():
			switch {
			case s.isStopped():
			case s.state.startedSince(at):
				// A batch system that sent SIGUSR1 to every process of the
				// job sent the supervisor its own: that checkpoint answers it.
				s.log.Debug("the job's checkpoint request came before the checkpoint just taken")
			default:
				s.log.Info("the job asked for a checkpoint (SIGUSR1 to its PID 1)")
				s.checkpointLogged(false)
			}
		}
	}
}

// isStopSignal tells whether sig asks for a final checkpoint and a stop.
func (s *supervisor) isStopSignal(sig syscall.Signal) bool {
	return sig == syscall.SIGTERM || (s.stopSignal != 0 && sig == s.stopSignal)
}

// stopWithCheckpoint answers a stop signal: a final checkpoint, then the
// job is ended whether or not the checkpoint made it (the batch system's
// SIGKILL follows anyway; a failed one leaves the previous generation).
func (s *supervisor) stopWithCheckpoint(sig syscall.Signal) {
	s.log.Infof("%s: taking a final checkpoint, then stopping the job", unix.SignalName(sig))
	if _, err := s.checkpointLogged(true); err != nil {
		s.mu.Lock()
		s.stopped, s.lastFailed = true, true
		s.mu.Unlock()
		s.log.Warnf("the final checkpoint failed; stopping the job anyway: %s", fallbackText(s.state.newest()))
	}
	s.sb.Kill()
}

// answerTimeout bounds how long an ending supervisor waits for control
// clients to be answered.
const answerTimeout = 10 * time.Second

// waitAnswers waits until the control requests being served are answered.
func (s *supervisor) waitAnswers() {
	done := make(chan struct{})
	go func() {
		s.answering.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(answerTimeout):
		s.log.Warn("a checkpoint request was still being served when the job ended")
	}
}

// isStopped reports whether a checkpoint has already ended the job.
func (s *supervisor) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// finish logs how the job ended, records a job that ended by itself (so
// `run` starts it anew instead of resuming it) and decides on a requeue.
// preempted says a stop signal came, even if the job ended before the
// supervisor acted on it.
func (s *supervisor) finish(st namespaces.ExitStatus, preempted bool) error {
	s.mu.Lock()
	stopped, failed, notCheckpointable := s.stopped, s.lastFailed, s.notCheckpointable
	s.mu.Unlock()
	lastGen := s.state.newest()
	switch {
	case notCheckpointable:
		// No requeue: the job would only fail the same way again.
		s.log.Errorf("job ended because it cannot be checkpointed (--require-checkpoint); exit status %d", ExitNotCheckpointable)
		return ExitStatus(ExitNotCheckpointable)
	case stopped:
		s.requeueNow = s.requeue
		switch {
		case failed && lastGen == 0:
			s.log.Infof("job stopped; its final checkpoint failed and it has no earlier one: it starts from the beginning when launched again")
		case failed:
			s.log.Infof("job stopped; its final checkpoint failed, so it resumes from generation %d: %s", lastGen, s.resumeHint())
		default:
			s.log.Infof("job stopped after its checkpoint; resume it with: %s", s.resumeHint())
		}
		return ExitStatus(exitCheckpointed)
	case st.Signal != 0:
		// Not recorded as finished: a job killed from outside (the batch
		// system's own signal, the OOM killer) resumes from its checkpoint.
		s.requeueNow = s.requeue && preempted
		s.log.Infof("job killed by signal %v; %s resumes it from its newest checkpoint", st.Signal, s.resumeHint())
		return ExitStatus(st.Code)
	}
	s.log.Infof("job finished with exit status %d", st.Code)
	if err := s.store.MarkFinished(image.Finished{Time: time.Now(), ExitCode: st.Code, Argv: s.job.Argv}); err != nil {
		s.log.Warnf("%v: a later `ckpt-apptainer run` may resume the job from its last checkpoint instead of starting it anew", err)
	}
	if st.Code == 0 {
		return nil
	}
	return ExitStatus(st.Code)
}

// resumeHint is the command that resumes this job. The job's settings are
// recorded; a cgroup parent is not (it belongs to this node), so the hint
// names it.
func (s *supervisor) resumeHint() string {
	hint := "ckpt-apptainer restart --ckpt-dir " + shellQuote(s.dir)
	if s.opts.CgroupParent != "" {
		hint += " --cgroup-parent " + shellQuote(s.opts.CgroupParent)
	}
	return hint
}

// CommandLine renders argv for log lines.
func CommandLine(argv []string) string { return strings.Join(argv, " ") }
