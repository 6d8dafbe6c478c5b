package main

import (
	"errors"
	"fmt"
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
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/cgroup"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/hooks"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

// exitCheckpointed is the supervisor's exit status when it stopped the job
// on purpose (SIGTERM, --signal, `checkpoint --kill`): 128+SIGTERM, what a
// batch system expects from a job that ended on SIGTERM. The log says
// whether the final checkpoint made it; either way `run` or `restart`
// resumes the job from its newest good generation.
const exitCheckpointed = 128 + int(syscall.SIGTERM)

// jobFlags are the flags launch and restart share.
func jobFlags() []cli.Flag {
	return []cli.Flag{
		ckptDirFlag,
		&cli.IntFlag{Name: "interval", Aliases: []string{"i"}, Usage: "checkpoint every `SECONDS` (0: only on request)"},
		&cli.IntFlag{Name: "keep", Value: 2, Usage: "keep the newest `N` generations (0: keep all)"},
		&cli.StringFlag{Name: "cgroup-parent", Usage: "writable (delegated) cgroup `DIR` to create the job cgroup in (v2 directory or v1 freezer directory)"},
		&cli.BoolFlag{Name: "no-cgroup", Usage: "do not use a cgroup; stop the job with ptrace alone"},
		&cli.BoolFlag{Name: "no-timens", Usage: "do not give the job a time namespace (its CLOCK_MONOTONIC then jumps across a restart)"},
		&cli.StringFlag{Name: "signal", Usage: "also take a final checkpoint and stop the job on `SIG` (as on SIGTERM), e.g. USR1 for #SBATCH --signal=B:USR1@60"},
		hooksFlag,
		&cli.BoolFlag{Name: "requeue", Usage: "once a signal stopped the job, ask Slurm to requeue it (scontrol requeue $SLURM_JOB_ID), unless Slurm requeues it itself or the job was cancelled"},
		&cli.StringFlag{Name: "local-limit", Value: "1GiB", Usage: "save up to `SIZE` of node-local files the job has open or mapped (tmpfs such as /dev/shm, files it writes on a local disk) in each checkpoint, so it can resume on another node; a checkpoint that needs more is refused, naming the file"},
		&cli.Int64Flag{Name: "dump-buffer", Value: -1, Usage: "hold up to `MIB` of page data in memory during a checkpoint, so the job runs on before the disk has caught up (-1: 256 MiB or a quarter of the available memory if less, 0: stream to disk while the job waits)"},
	}
}

// supervisor owns one running job: its sandbox, cgroup, checkpoint store,
// timer, control socket and signals.
type supervisor struct {
	log    logrus.FieldLogger
	dir    string
	store  *image.Store
	unlock func()
	cg     *cgroup.Cgroup // nil: ptrace-only
	sb     *namespaces.Sandbox
	// timeNamespace says the job has a time namespace of its own, whose
	// clocks checkpoints record.
	timeNamespace bool
	// cpuSeen is the CPU features of every node the job ran on, which
	// checkpoints record.
	cpuSeen *image.CPU
	// localLimit is --local-limit in bytes.
	localLimit int64
	job        image.Job
	jobPID     int // host pid of the job's main process
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
}

// openSupervisor resolves and locks the checkpoint directory.
func openSupervisor(c *cli.Context) (*supervisor, error) {
	dir, err := ckptDir(c)
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
	unlock, err := st.Lock()
	if err != nil {
		return nil, err
	}
	if err := st.CleanStale(); err != nil {
		logrus.Warnf("checkpoint directory %s: %v", dir, err)
	}
	s := &supervisor{
		log:      logrus.StandardLogger(),
		dir:      dir,
		store:    st,
		unlock:   unlock,
		interval: time.Duration(c.Int("interval")) * time.Second,
		keep:     c.Int("keep"),
		buffer:   c.Int64("dump-buffer"),
	}
	if s.buffer > 0 {
		s.buffer <<= 20
	}
	if s.localLimit, err = units.RAMInBytes(c.String("local-limit")); err != nil || s.localLimit <= 0 {
		unlock()
		return nil, fmt.Errorf("--local-limit %q: want a size such as 512MiB or 4GiB", c.String("local-limit"))
	}
	if c.Int("interval") < 0 {
		unlock()
		return nil, fmt.Errorf("--interval %d: must be 0 or more seconds", c.Int("interval"))
	}
	if c.String("signal") != "" {
		if s.stopSignal, err = parseStopSignal(c.String("signal")); err != nil {
			unlock()
			return nil, err
		}
	}
	if err := s.loadHooks(c); err != nil {
		unlock()
		return nil, err
	}
	s.requeue = c.Bool("requeue")
	if s.requeue && os.Getenv("SLURM_JOB_ID") == "" {
		s.log.Warn("--requeue: $SLURM_JOB_ID is not set, so a stopped job cannot be requeued; it is resumed by the next `ckpt-apptainer run`")
	}
	return s, nil
}

// makeCgroup creates the job cgroup, or returns nil when the job is to be
// stopped with ptrace alone.
func (s *supervisor) makeCgroup(c *cli.Context) error {
	if c.Bool("no-cgroup") {
		s.log.Info("no job cgroup (--no-cgroup): checkpoints stop the job with ptrace alone")
		return nil
	}
	// The pid names the owner (removeStaleCgroups relies on it); the
	// suffix keeps a reused pid from meeting a dead owner's cgroup.
	name := fmt.Sprintf("%s%d-%06x", jobCgroupPrefix, os.Getpid(), rand.Uint32()&0xffffff)
	cg, err := cgroup.Create(cgroup.Options{Parent: c.String("cgroup-parent"), Name: name})
	if errors.Is(err, cgroup.ErrNoWritableCgroup) && c.String("cgroup-parent") == "" {
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

// jobCgroupPrefix starts the name of every job cgroup: ckpt-<supervisor
// pid>-<random>.
const jobCgroupPrefix = "ckpt-"

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
		if !e.IsDir() || !strings.HasPrefix(name, jobCgroupPrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(name, jobCgroupPrefix), "-")
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
			return fmt.Errorf("move the sandbox into cgroup %s: %w", s.cg.Path(), err)
		}
	}
	return nil
}

// close releases the cgroup, the control socket and the directory lock.
func (s *supervisor) close() {
	s.dropCgroup()
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
		s.log.Warn("the final checkpoint failed; stopping the job anyway, the previous generation stays")
		s.mu.Lock()
		s.stopped, s.lastFailed = true, true
		s.mu.Unlock()
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
	stopped, failed := s.stopped, s.lastFailed
	s.mu.Unlock()
	switch {
	case stopped:
		s.requeueNow = s.requeue
		if failed {
			s.log.Infof("job stopped; its last checkpoint failed, so it resumes from the generation before: %s", s.resumeHint())
		} else {
			s.log.Infof("job stopped after its checkpoint; resume it with: %s", s.resumeHint())
		}
		return exitStatus(exitCheckpointed)
	case st.Signal != 0:
		// Not recorded as finished: a job killed from outside (the batch
		// system's own signal, the OOM killer) resumes from its checkpoint.
		s.requeueNow = s.requeue && preempted
		s.log.Infof("job killed by signal %v; %s resumes it from its newest checkpoint", st.Signal, s.resumeHint())
		return exitStatus(st.Code)
	}
	s.log.Infof("job finished with exit status %d", st.Code)
	if err := s.store.MarkFinished(image.Finished{Time: time.Now(), ExitCode: st.Code, Argv: s.job.Argv}); err != nil {
		s.log.Warnf("%v: a later `ckpt-apptainer run` may resume the job from its last checkpoint instead of starting it anew", err)
	}
	if st.Code == 0 {
		return nil
	}
	return exitStatus(st.Code)
}

// resumeHint is the command that resumes this job.
func (s *supervisor) resumeHint() string {
	return "ckpt-apptainer restart --ckpt-dir " + s.dir
}

// commandLine renders argv for log lines.
func commandLine(argv []string) string { return strings.Join(argv, " ") }
