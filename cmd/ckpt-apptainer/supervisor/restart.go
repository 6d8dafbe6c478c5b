package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/gpu"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/hooks"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

// Restart resumes the job from generation (a number; "" for the newest
// good one, falling back to older ones that restore) and supervises it
// until it ends.
func Restart(o Options, generation string) error {
	n := 0
	if generation != "" {
		var err error
		if n, err = image.ParseGeneration(generation); err != nil {
			return fmt.Errorf("restart: %w", err)
		}
	}
	if err := haveCheckpoint(o); err != nil {
		return err
	}
	o.reuseSettings = true
	return supervised(o, func(s *supervisor) error {
		if err := refuseFinished(s.store, o.Force); err != nil {
			return err
		}
		gen, err := pickGeneration(s.store, n)
		if err != nil {
			return err
		}
		return restartJob(s, gen, o.Image, generation == "")
	})
}

// restartJob restores generation gen and supervises the job until it
// ends. img is the container image's new path when it moved, else "".
// With fallback, a generation that verified but cannot be restored (its
// contents are refused, or the restore fails once started) is marked as
// failed and the newest good generation before it is tried, and so on: a
// requeued job resumes from the checkpoint before, instead of failing at
// every requeue.
func restartJob(s *supervisor, gen *image.Generation, img string, fallback bool) error {
	for tries := 1; ; tries++ {
		a, err := s.restoreGeneration(gen, img)
		if err == nil {
			// Only now: a restart refused for its flags leaves the
			// job's settings as they were.
			s.recordSettings()
			s.branchAfter(gen.Gen)
			s.checkpointed(gen.Gen, nil)
			s.state.setRestored(gen.Gen)
			return s.resumeRestored(gen, a)
		}
		// A task of the new sandbox took an id the job needs: nothing
		// is wrong with the generation, and a new sandbox is another
		// chance.
		if errors.Is(err, engine.ErrIDTaken) && tries < restoreTries {
			s.log.Warnf("%v; restoring generation %d again in a new sandbox", err, gen.Gen)
			continue
		}
		tries = 0
		if !fallback || !generationFailed(err) || s.container.isInstance() {
			return err
		}
		if merr := s.store.MarkFailed(gen.Gen, err); merr != nil {
			s.log.Warn(merr)
		}
		older, skipped, oerr := s.store.GoodBefore(gen.Gen)
		for _, e := range skipped {
			s.log.Warnf("%v", e)
		}
		if oerr != nil {
			return &noneRestorable{err: fmt.Errorf("%w; no older generation to fall back to (%v)", err, oerr)}
		}
		s.log.Warnf("%v; trying generation %d", err, older.Gen)
		gen = older
	}
}

// restoreTries is how often a restart restores one generation when a
// task of its sandbox takes an id the job needs.
const restoreTries = 3

// noneRestorable is a restart with fallback that found no generation that
// restores, each for what it holds.
type noneRestorable struct{ err error }

func (e *noneRestorable) Error() string { return e.err.Error() }
func (e *noneRestorable) Unwrap() error { return e.err }

// generationFailed says a restore failed for what the generation holds,
// not for what the node or the container lacks: an older generation may
// restore.
func generationFailed(err error) bool {
	var ie *engine.ImageError
	var re *engine.RestoreError
	return errors.As(err, &ie) || errors.As(err, &re)
}

// restoreAttempt is what restoreGeneration started for a restored job.
type restoreAttempt struct {
	res           *engine.RestoreResult
	container     *engine.ContainerStart
	instanceState string
}

// restoreGeneration restores gen into a new sandbox and cgroup. On failure
// nothing of the attempt is left running.
func (s *supervisor) restoreGeneration(gen *image.Generation, img string) (_ *restoreAttempt, err error) {
	m := gen.Manifest
	s.job = m.Job
	s.log.Infof("restarting %q from generation %d (%s)", CommandLine(m.Job.Argv), gen.Gen, m.Created.Local().Format(time.DateTime))
	if err := engine.CheckRequirements(m, s.opts.NoTimens); err != nil {
		return nil, fmt.Errorf("restart not started: %w", err)
	}
	if m.Network == image.NetworkPrivate && s.opts.Net != NetPrivate {
		return nil, fmt.Errorf("restart not started: generation %d was taken of a job with a network of its own (--net private), whose sockets need one again: restart it with --net private, not --net %s", gen.Gen, s.opts.Net)
	}
	if err := engine.Validate(gen); err != nil {
		return nil, fmt.Errorf("restart not started: %w", err)
	}
	if s.cpuSeen, err = engine.CPUSeen(m.CPU); err != nil {
		s.log.Warnf("%v: checkpoints cannot tell which CPUs the job may move to", err)
	}
	gr, err := prepareGPU(m.GPU)
	if err != nil {
		return nil, fmt.Errorf("restart not started: %w", err)
	}
	if gr != nil && gpu.Moved(gr.pairs) {
		for _, p := range gr.pairs {
			if p.Old != p.New {
				s.log.Infof("GPU: the job ran on %s; it is restored onto %s, which this job was given", p.Old, p.New)
			}
		}
	}
	defer func() {
		if err != nil && gr != nil {
			gr.helper.Close()
		}
	}()

	pre, err := s.runHooks(hooks.Prerestore, gen.Gen, specs.StateCreating, hookTarget{}, nil)
	if lerr := s.store.AppendHookLog(pre); lerr != nil {
		s.log.Warn(lerr)
	}
	if err != nil {
		return nil, fmt.Errorf("restart not started, generation %d is unchanged: %w", gen.Gen, err)
	}
	a := &restoreAttempt{}
	if err := s.store.ClearFinished(); err != nil {
		return nil, err
	}
	if m.Container != nil {
		if img != "" {
			if img, err = filepath.Abs(img); err != nil {
				return nil, err
			}
		}
		if a.container, err = s.containerStart(m.Container, img); err != nil {
			return nil, err
		}
		if img != "" && m.Container.ImageArg < len(s.job.Argv) && CommandLine(s.job.Argv) == CommandLine(m.Container.Argv) {
			// Later checkpoints record the image where it is now.
			s.job.Argv = append([]string(nil), s.job.Argv...)
			s.job.Argv[m.Container.ImageArg] = img
		}
	} else if img != "" {
		return nil, fmt.Errorf("restart --image: generation %d is not a container job's", gen.Gen)
	}
	s.container = parseContainer(s.job.Argv, s.job.Env)
	if s.container.isInstance() {
		if a.instanceState, err = s.claimInstance(); err != nil {
			return nil, fmt.Errorf("restart: %w", err)
		}
	}
	if err := s.makeCgroup(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.dropCgroup()
		}
	}()
	if s.cg != nil && m.Cgroup != nil && m.Cgroup.Resources != nil {
		warnings, err := s.cg.Apply(m.Cgroup.Resources)
		if err != nil {
			return nil, fmt.Errorf("job cgroup limits: %w", err)
		}
		for _, w := range warnings {
			s.log.Warnf("job cgroup: %s", w)
		}
	}
	opts := namespaces.Options{TimeNamespace: !s.opts.NoTimens && m.Time != nil, OutliveMain: s.container.isInstance(),
		PrivateNetwork: s.opts.Net == NetPrivate}
	if opts.TimeNamespace {
		mono, boot := hostClocks()
		opts.MonotonicOffset = time.Duration(m.Time.MonotonicNs) - mono
		opts.BoottimeOffset = time.Duration(m.Time.BoottimeNs) - boot
	}
	if err := s.startSandbox(opts); err != nil {
		return nil, err
	}
	pr := newProgressReporter(fmt.Sprintf("restore generation %d", gen.Gen), s.log, os.Stderr)
	a.res, err = engine.Restore(engine.RestoreOptions{
		Gen: gen, Spawner: s.sb, InitPID: s.sb.InitPID(), NoRollback: s.opts.NoRollback, Strict: s.opts.Strict, Log: s.log,
		Container: a.container, Progress: pr.update, PagesUnverified: s.store.DeferPages,
	})
	pr.end()
	if err == nil && gr != nil {
		t0 := time.Now()
		if err = gr.resume(a.res.HostPIDs); err != nil {
			err = fmt.Errorf("the job was restored, but its GPU processes could not be put back on the GPU: %w; the job was stopped again", err)
		} else {
			s.log.Infof("GPU: %d processes back on the GPU in %v", len(m.GPU.Processes), time.Since(t0).Round(time.Millisecond))
		}
	}
	if err != nil {
		s.sb.Kill()
		s.sb.Wait()
		return nil, err
	}
	return a, nil
}

// resumeRestored finishes a restart once the job runs again: hooks, and the
// supervision until the job ends.
func (s *supervisor) resumeRestored(gen *image.Generation, a *restoreAttempt) error {
	res, cs := a.res, a.container
	s.jobPID = res.HostPID
	if cs != nil {
		s.jobPID = res.RuntimeHostPID
	}
	s.log.Infof("restored generation %d: %s in %v%s; the job runs as host pid %d (supervisor %d)", gen.Gen, HumanBytes(res.Bytes), res.Duration.Round(time.Millisecond),
		rateSuffix(res.Bytes, res.Duration), s.jobPID, os.Getpid())
	tg := hookTarget{mainPID: s.jobPID}
	if cs != nil {
		tg.appPID, tg.runtime = res.HostPID, res.RuntimeHostPID
	}
	post, err := s.runHooks(hooks.Postrestore, gen.Gen, specs.StateRunning, tg, nil)
	if err != nil {
		s.log.Warn(err)
	}
	if err := s.store.AppendHookLog(post); err != nil {
		s.log.Warn(err)
	}
	if a.instanceState != "" {
		go s.publishInstance(a.instanceState)
	}
	return s.supervise()
}

// haveCheckpoint refuses a restart from a directory that holds no
// checkpoint before anything is written there: a restart in the wrong
// directory leaves nothing behind.
func haveCheckpoint(o Options) error {
	dir, err := CkptDir(o.CkptDir, o.Instance)
	if err != nil {
		return err
	}
	hint := "give the job's --ckpt-dir (or $CKPT_APPTAINER_DIR), or start the job with `ckpt-apptainer run`, which launches it when there is no checkpoint"
	st, err := image.OpenStore(dir, false)
	if err != nil {
		return fmt.Errorf("restart: %w: %s", err, hint)
	}
	gens, err := st.Generations()
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if len(gens) == 0 {
		return fmt.Errorf("restart: no checkpoint in %s: %s", dir, hint)
	}
	return nil
}

// refuseFinished refuses, unless forced, to restart a job that ran to its
// end since its last checkpoint: it would run its last part again.
func refuseFinished(st *image.Store, force bool) error {
	fin, err := st.Finished()
	if err != nil || fin == nil || force {
		return err
	}
	return fmt.Errorf("restart: the job in %s finished at %s with exit code %d; restarting it would run its end again from a checkpoint taken before: use `restart --force` to do that, or `ckpt-apptainer launch` to start it anew",
		st.Dir, fin.Time.Local().Format(time.DateTime), fin.ExitCode)
}

// pickGeneration opens generation n, named on the command line, or the
// newest one whose checksums verify when n is 0.
func pickGeneration(st *image.Store, n int) (*image.Generation, error) {
	if n != 0 {
		g, err := st.Open(n)
		if err != nil {
			return nil, err
		}
		if err := g.VerifyRestorable(); err != nil {
			return nil, err
		}
		return g, nil
	}
	g, err := st.NewestGood(logrus.StandardLogger())
	if err != nil {
		return nil, fmt.Errorf("%w (checkpoint directory %s)", err, st.Dir)
	}
	return g, nil
}

// hostClocks reads the host's CLOCK_MONOTONIC and CLOCK_BOOTTIME.
func hostClocks() (mono, boot time.Duration) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	mono = time.Duration(ts.Nano())
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	boot = time.Duration(ts.Nano())
	return mono, boot
}

// branchAfter makes the generations after gen, which the job restored
// from, a history branch, and says so: the job's next checkpoint follows
// gen in its line, and the newer ones are not silently left behind.
func (s *supervisor) branchAfter(gen int) {
	marked, err := s.store.Branch(gen, time.Now())
	if err != nil {
		s.log.Warnf("%v: a later restart may pick a generation newer than %d", err, gen)
	}
	if len(marked) == 0 {
		return
	}
	fate := "they stay (--keep 0)"
	if s.keep > 0 {
		fate = fmt.Sprintf("--keep %d removes them as the job's new generations come", s.keep)
	}
	noun, verb, them := "generation", "is", "it"
	if len(marked) > 1 {
		noun, verb, them = "generations", "are", "them"
	}
	s.log.Infof("%s %s, newer than generation %d, %s now a history branch: `list` shows %s, restarts pass over %s, and %s",
		noun, genList(marked), gen, verb, them, them, fate)
}

// genList renders generation numbers as "3", "3 and 4" or "3, 4 and 5".
func genList(gens []int) string {
	last := strconv.Itoa(gens[len(gens)-1])
	if len(gens) == 1 {
		return last
	}
	return image.JoinGenerations(gens[:len(gens)-1], ", ") + " and " + last
}
