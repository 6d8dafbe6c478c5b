package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/hooks"
)

// ImageHooksPath is where an image author puts hooks for the image's
// application: read through the container's root, every entry runs inside
// the container (its path is a path in the image).
const ImageHooksPath = "/.singularity.d/ckpt-apptainer/hooks.json"

// loadHooks reads the site's and the user's hooks files.
func (s *supervisor) loadHooks(userFile string) error {
	cfg, err := hooks.Load(userFile)
	if err != nil {
		return fmt.Errorf("hooks: %w", err)
	}
	s.hooks, s.userHooks = cfg, userFile
	if n := cfg.Len(); n > 0 {
		s.log.Debugf("%d lifecycle hooks configured", n)
	}
	return nil
}

// imageHooks reads the container image's hooks file through the
// application's root, once per supervisor: the image does not change under
// a running job. A missing file is no hooks; a bad one is reported once
// and ignored, since it is the image's, not the user's, to fix.
func (s *supervisor) imageHooks(appPID int) *hooks.Config {
	if s.imageHooksRead || appPID <= 0 {
		return s.imageHooksCfg
	}
	s.imageHooksRead = true
	path := fmt.Sprintf("/proc/%d/root%s", appPID, ImageHooksPath)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		var cfg *hooks.Config
		if cfg, err = hooks.Parse(data, "image:"+ImageHooksPath); err == nil {
			if len(cfg.Prerestore) > 0 {
				err = fmt.Errorf("prerestore hooks cannot run in the container (nothing of the job runs yet)")
			} else {
				for _, e := range hooks.Events {
					for i := range cfg.For(e) {
						cfg.For(e)[i].Container = true
					}
				}
				s.imageHooksCfg = cfg
			}
		}
	}
	if err != nil {
		s.log.Warnf("the image's hooks file %s is not used: %v", ImageHooksPath, err)
	}
	return s.imageHooksCfg
}

// hookTarget is the job process a hook's state names.
type hookTarget struct {
	mainPID int // host pid of the job's main process (the runtime for a container job)
	appPID  int // host pid of the container's application; 0 for a plain job
	runtime int // host pid of the container runtime
}

// runHooks runs the hooks of event for generation gen. The order is the
// site's, the image's (container jobs), then the user's. ckptErr is set
// for a postcheckpoint after a checkpoint that committed nothing. The runs
// are returned for the record even when err says some failed.
func (s *supervisor) runHooks(event hooks.Event, gen int, status specs.ContainerState, tg hookTarget, ckptErr error) ([]image.HookRun, error) {
	list := s.hooksFor(event, tg)
	if len(list) == 0 {
		return nil, nil
	}
	st := hooks.State{
		ID:            s.jobID(),
		Status:        status,
		PID:           tg.mainPID,
		CheckpointDir: s.dir,
		Generation:    gen,
		Argv:          s.job.Argv,
		SlurmJobID:    os.Getenv("SLURM_JOB_ID"),
	}
	if ckptErr != nil {
		st.Error = ckptErr.Error()
	}
	if s.container != nil && s.container.cmd != nil {
		st.Container = &hooks.Container{Image: s.container.cmd.Image, RuntimePID: tg.runtime, AppPID: tg.appPID}
	}
	if status == specs.StateStopped {
		// Nothing of the job is left to enter.
		st.PID = 0
		kept := list[:0:0]
		for _, h := range list {
			if h.Container {
				s.log.Warnf("%s hook %s (%s) skipped: it runs in the container, and the job was stopped", event, h.Path, h.Source)
				continue
			}
			kept = append(kept, h)
		}
		list = kept
	}
	results, err := hooks.Run(context.Background(), s.log, event, list, st)
	runs := make([]image.HookRun, len(results))
	for i, r := range results {
		runs[i] = image.HookRun{
			Event: string(r.Event), Path: r.Hook.Path, Args: r.Hook.Args, Source: r.Hook.Source,
			InContainer: r.Hook.Container, Generation: gen, Start: r.Start, Duration: r.Duration, ExitCode: r.ExitCode,
		}
		if r.Err != nil {
			runs[i].Error = r.Err.Error()
		}
	}
	return runs, err
}

// hooksFor lists the hooks of event in the order they run.
func (s *supervisor) hooksFor(event hooks.Event, tg hookTarget) []hooks.Hook {
	if s.hooks == nil {
		return nil
	}
	var list []hooks.Hook
	site, user := splitBySource(s.hooks.For(event), s.userHooks)
	list = append(list, site...)
	if tg.appPID > 0 {
		if img := s.imageHooks(tg.appPID); img != nil {
			list = append(list, img.For(event)...)
		}
	}
	return append(list, user...)
}

// splitBySource separates the site's hooks from the user's: Load puts the
// site file's first, so the user's start at the first entry from the
// --hooks file userFile.
func splitBySource(list []hooks.Hook, userFile string) (site, user []hooks.Hook) {
	for i, h := range list {
		if userFile != "" && h.Source == userFile {
			return list[:i], list[i:]
		}
	}
	return list, nil
}

// jobID names the job in a hook's state: the Slurm job id when there is
// one, else the checkpoint directory's name.
func (s *supervisor) jobID() string {
	if id := os.Getenv("SLURM_JOB_ID"); id != "" {
		return id
	}
	return filepath.Base(s.dir)
}
