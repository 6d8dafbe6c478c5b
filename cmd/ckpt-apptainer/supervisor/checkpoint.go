package supervisor

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fds"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/writetrack"
	"github.com/ckpt-apptainer/ckpt-apptainer/hooks"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

// CheckpointResult is what a checkpoint request answers.
type CheckpointResult struct {
	Generation int           `json:"generation"`
	Bytes      int64         `json:"bytes"`
	Duration   time.Duration `json:"duration_ns"`
	Stopped    time.Duration `json:"stopped_ns"`
	// Parent is the generation an incremental one was written on;
	// UnchangedBytes the page data it left there, UnreadBytes the part of
	// that write tracking spared reading, UnreadBy how it was tracked.
	Parent         int    `json:"parent,omitempty"`
	UnchangedBytes int64  `json:"unchanged_bytes,omitempty"`
	UnreadBytes    int64  `json:"unread_bytes,omitempty"`
	UnreadBy       string `json:"unread_by,omitempty"`
	// PreCopyBytes is the page data written while the job ran.
	PreCopyBytes int64 `json:"precopy_bytes,omitempty"`
	// CompressedBytes is what the page data came to compressed (0: not
	// compressed).
	CompressedBytes int64  `json:"compressed_bytes,omitempty"`
	Error           string `json:"error,omitempty"`
}

// checkpointLogged takes a checkpoint and logs the outcome for the user.
func (s *supervisor) checkpointLogged(kill bool) (*CheckpointResult, error) {
	s.state.setCheckpointing(true)
	res, err := s.checkpoint(kill)
	s.state.setCheckpointing(false)
	if err != nil {
		s.checkpointFailed(err, kill)
		return nil, err
	}
	s.checkpointed(res.Generation, res)
	s.log.Infof("checkpoint generation %d: %s in %v%s (job stopped %v)%s", res.Generation, HumanBytes(res.Bytes),
		res.Duration.Round(time.Millisecond), rateSuffix(res.Bytes, res.Duration), res.Stopped.Round(time.Millisecond), checkpointDetails(res))
	return res, nil
}

// checkpointDetails says how much of the job's memory a checkpoint wrote
// while the job ran, found unchanged since its parent generation, and did
// not even read because write tracking said it was unchanged.
func checkpointDetails(res *CheckpointResult) string {
	var b strings.Builder
	if res.PreCopyBytes > 0 {
		fmt.Fprintf(&b, "; %s of it copied while the job ran", HumanBytes(res.PreCopyBytes))
	}
	if res.CompressedBytes > 0 {
		fmt.Fprintf(&b, "; compressed to %s", HumanBytes(res.CompressedBytes))
	}
	if res.Parent != 0 {
		fmt.Fprintf(&b, "; incremental on generation %d: %s unchanged", res.Parent, HumanBytes(res.UnchangedBytes))
	}
	if res.UnreadBytes > 0 {
		fmt.Fprintf(&b, "; %s found unchanged by %s without reading it", HumanBytes(res.UnreadBytes), res.UnreadBy)
	}
	return b.String()
}

// checkpoint takes one generation. With kill the job is ended once the
// generation is on disk; a failed checkpoint never ends it.
func (s *supervisor) checkpoint(kill bool) (*CheckpointResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, fmt.Errorf("the job was already stopped by a checkpoint")
	}
	w, err := s.store.Begin()
	if err != nil {
		return nil, err
	}
	// Before the manifest, which reads the job's main process: once an
	// instance's launcher has returned, its daemon stands for it.
	var runtime int
	if s.container != nil && s.container.refused == nil {
		if runtime, err = s.containerRuntime(); err != nil {
			w.Abort()
			return nil, err
		}
	}
	m := s.manifest()
	opts := engine.CheckpointOptions{
		InitPID:     s.sb.InitPID(),
		MainPID:     s.jobPID,
		Writer:      w,
		Manifest:    m,
		Stdio:       fds.Stdio{PID: os.Getpid()},
		Kill:        kill,
		Log:         s.log,
		BufferBytes: s.buffer,
		LocalLimit:  s.localLimit,
		Incremental: s.opts.Incremental,
		PreCopy:     s.opts.PreCopy,
		Compress:    s.codec,
		Stopped: func() {
			if !s.timeNamespace {
				return // said at launch: its clocks jump at restart
			}
			// Read while the job is stopped: at restart its clocks go on
			// from here, never behind what it has seen.
			if mono, boot, err := namespaces.JobClocks(s.jobPID); err == nil {
				m.Time = &image.TimeNamespace{MonotonicNs: mono.Nanoseconds(), BoottimeNs: boot.Nanoseconds()}
			} else {
				s.log.Warnf("job clocks not recorded (%v): after a restart from this checkpoint CLOCK_MONOTONIC jumps", err)
			}
		},
		Commit: func() error { return w.Commit(m) },
	}
	if s.cg != nil && s.cg.CanFreeze() {
		opts.Freezer = s.cg
	}
	tg := hookTarget{mainPID: s.jobPID, runtime: runtime}
	if s.container != nil {
		if s.container.refused != nil {
			w.Abort()
			return nil, s.container.refused
		}
		app, err := findContainerApp(runtime)
		if err != nil {
			w.Abort()
			return nil, err
		}
		if m.Container, err = s.containerRecord(app, runtime); err != nil {
			w.Abort()
			return nil, err
		}
		opts.App, opts.MainPID = app.scope, app.mainPID
		tg.appPID = app.mainPID
		if s.cg != nil && s.cg.CanFreeze() {
			fz, err := s.appCgroup(app)
			if err != nil {
				w.Abort()
				return nil, err
			}
			opts.Freezer = fz
		}
	}
	m.Hooks, err = s.runHooks(hooks.Precheckpoint, w.Gen, specs.StateRunning, tg, nil)
	if err != nil {
		w.Abort()
		err = fmt.Errorf("checkpoint skipped: %w", err)
		s.postCheckpointHooks(w.Gen, tg, false, err)
		return nil, err
	}
	paused, err := s.pauseGPU(opts.App)
	if err != nil {
		w.Abort()
		err = fmt.Errorf("checkpoint not taken: %w", err)
		s.postCheckpointHooks(w.Gen, tg, false, err)
		return nil, err
	}
	if paused != nil {
		m.GPU = paused.record
		commit := opts.Commit
		opts.Commit = func() error {
			paused.keepDumped(m)
			return commit()
		}
	}
	// A GPU driver writes device state into host memory behind the page
	// tables' back: such jobs are compared by content.
	tracked := s.tracker.Method() != writetrack.None && m.GPU == nil
	if tracked {
		opts.Tracker = s.tracker
	}
	if s.opts.Incremental {
		opts.Parent, opts.MinRefGen = s.incrementalParent(w.Gen, kill)
		opts.TrustWrites = tracked && opts.Parent != nil && opts.Parent.Gen == s.armedGen
	}
	opts.ArmWrites = tracked && !kill
	s.armedGen = 0 // until this generation is committed with tracking armed
	pr := newProgressReporter(fmt.Sprintf("checkpoint generation %d", w.Gen), s.log, os.Stderr)
	opts.Progress = pr.update
	opts.OnRelease = pr.jobResumed
	s.state.setProgress(pr)
	stats, err := engine.Checkpoint(opts)
	s.state.setProgress(nil)
	pr.end()
	if paused != nil {
		switch {
		case err == nil && kill:
			paused.end() // the job is gone with its GPU state
		default:
			if gerr := paused.resume(); gerr != nil {
				s.log.Errorf("%v: the job's GPU processes could not be put back on the GPU", gerr)
				if err == nil {
					err = fmt.Errorf("generation %d was written, but the job's GPU processes could not be put back on the GPU: %w", w.Gen, gerr)
					s.postCheckpointHooks(w.Gen, tg, false, err)
					return nil, err
				}
			}
		}
	}
	if err != nil {
		w.Abort()
		s.postCheckpointHooks(w.Gen, tg, false, err)
		return nil, err
	}
	s.postCheckpointHooks(w.Gen, tg, kill, nil)
	if stats.WritesArmed {
		s.armedGen = w.Gen
	}
	if kill {
		s.stopped = true
	}
	if err := s.store.Prune(s.keep); err != nil {
		s.log.Warnf("remove old generations: %v", err)
	}
	return &CheckpointResult{Generation: w.Gen, Bytes: stats.PageBytes, Duration: stats.Duration, Stopped: stats.StoppedFor,
		Parent: m.Parent, UnchangedBytes: stats.RefBytes, UnreadBytes: stats.UnreadBytes, UnreadBy: s.tracker.Method().String(), PreCopyBytes: stats.PreCopyBytes,
		CompressedBytes: stats.CompressedBytes}, nil
}

// chainWindow is how many generations back a periodic incremental
// checkpoint may leave unchanged data: pages whose data is older are
// written again, so a generation never needs more than this many
// directories (or --keep, if more) and the space of data no one reads any
// more is given back.
const chainWindow = 8

// incrementalParent picks the generation an incremental checkpoint gen is
// compared with (the latest one) and the oldest generation its runs may
// read from. A final checkpoint (kill) writes as little as it can, within
// the grace time a preemption leaves: it may read from any generation, and
// the periodic one after the restart writes the old data again.
func (s *supervisor) incrementalParent(gen int, kill bool) (*image.Generation, int) {
	latest, err := s.store.Latest()
	if err != nil {
		return nil, 0
	}
	parent, err := s.store.Open(latest)
	if err != nil {
		s.log.Warnf("generation %d is written in full: its parent generation %d cannot be read: %v", gen, latest, err)
		return nil, 0
	}
	if kill || s.keep <= 0 {
		return parent, 0
	}
	return parent, gen - max(s.keep, chainWindow) + 1
}

// postCheckpointHooks runs the postcheckpoint hooks after an attempt at
// generation gen, also after one that failed (ckptErr), so that a hook
// that undoes what its precheckpoint partner did always runs. Their
// failures are warnings: the checkpoint is already on disk, or not.
func (s *supervisor) postCheckpointHooks(gen int, tg hookTarget, stopped bool, ckptErr error) {
	status := specs.StateRunning
	if stopped {
		status = specs.StateStopped
	}
	runs, err := s.runHooks(hooks.Postcheckpoint, gen, status, tg, ckptErr)
	if err != nil {
		s.log.Warn(err)
	}
	if ckptErr != nil {
		// The attempt committed nothing: its number goes to the next one,
		// whose record must not list these runs.
		for i := range runs {
			runs[i].Generation = 0
		}
	}
	if err := s.store.AppendHookLog(runs); err != nil {
		s.log.Warn(err)
	}
}

// manifest starts the manifest of a new generation with what the
// supervisor knows about the job.
func (s *supervisor) manifest() *image.Manifest {
	var u unix.Utsname
	unix.Uname(&u)
	host, _ := os.Hostname()
	m := &image.Manifest{
		ToolVersion: s.opts.Version,
		Kernel:      unix.ByteSliceToString(u.Release[:]),
		Arch:        runtime.GOARCH,
		Host:        host,
		Job:         s.job,
		Cgroup:      &image.Cgroup{Version: "none"},
		CPU:         s.cpuSeen,
	}
	if ns, err := namespaces.Namespaces(s.jobPID); err == nil {
		m.Namespaces = ns
	}
	if s.opts.Net == NetPrivate {
		m.Network = image.NetworkPrivate
	}
	if mounts, err := namespaces.Mounts(s.jobPID); err == nil {
		m.Mounts = mounts
	}
	if s.cg != nil {
		m.Cgroup = &image.Cgroup{Version: string(s.cg.Version()), Path: s.cg.Path()}
		if res, err := s.cg.Resources(); err == nil {
			m.Cgroup.Resources = res
		} else {
			s.log.Debugf("cgroup limits: %v", err)
		}
	}
	return m
}

func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}
