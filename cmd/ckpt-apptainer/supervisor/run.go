package supervisor

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// Run resumes the job from its newest good checkpoint of argv, or launches
// argv when there is none (or the job ran to its end), and supervises it
// until it ends.
func Run(o Options, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("run: no command given; usage: ckpt-apptainer run [flags] -- CMD [ARGS...]")
	}
	o.reuseSettings = true
	return supervised(o, func(s *supervisor) error {
		gen, img, err := resumable(s, argv)
		if err != nil {
			return err
		}
		if gen == nil {
			return launchJob(s, argv)
		}
		if img == "" {
			img = o.Image
		}
		err = restartJob(s, gen, img, true)
		var none *noneRestorable
		if errors.As(err, &none) {
			// Damage the checksums before the restore did not show (the
			// page data is verified as it is read).
			s.log.Warnf("%v; launching %q from the beginning (the damaged generations stay; `ckpt-apptainer list --ckpt-dir %s` shows them)",
				err, CommandLine(argv), s.dir)
			return launchJob(s, argv)
		}
		return err
	})
}

// resumable picks what `run` resumes: the newest good generation of argv,
// or nil to launch argv anew. img is the image path argv names when only
// the container image's path differs from the checkpoint's (the restart
// then checks that it is the same image).
func resumable(s *supervisor, argv []string) (gen *image.Generation, img string, err error) {
	gens, err := s.store.Generations()
	if err != nil {
		return nil, "", err
	}
	if len(gens) == 0 {
		s.log.Infof("no checkpoint in %s: launching %q", s.dir, CommandLine(argv))
		return nil, "", nil
	}
	fin, err := s.store.Finished()
	if err != nil {
		return nil, "", err
	}
	if fin != nil {
		s.log.Infof("the job in %s ran to its end (exit status %d, %s): launching %q anew",
			s.dir, fin.ExitCode, fin.Time.Local().Format(time.DateTime), CommandLine(argv))
		return nil, "", nil
	}
	g, err := s.store.NewestGood(s.log)
	if err != nil {
		s.log.Warnf("%v; launching %q from the beginning (the damaged generations stay; `ckpt-apptainer list --ckpt-dir %s` shows them)",
			err, CommandLine(argv), s.dir)
		return nil, "", nil
	}
	old := g.Manifest.Job.Argv
	if slices.Equal(old, argv) {
		return g, "", nil
	}
	if ct := g.Manifest.Container; ct != nil && slices.Equal(ct.Argv, old) && ct.ImageArg > 0 && ct.ImageArg < len(old) && len(old) == len(argv) {
		moved := slices.Clone(old)
		moved[ct.ImageArg] = argv[ct.ImageArg]
		if slices.Equal(moved, argv) {
			s.log.Infof("the container image is now %s (the checkpoint has %s)", argv[ct.ImageArg], old[ct.ImageArg])
			return g, argv[ct.ImageArg], nil
		}
	}
	return nil, "", fmt.Errorf("checkpoint directory %s holds generation %d of another command, %q, not of %q: give this job its own --ckpt-dir, or resume that one with `ckpt-apptainer restart --ckpt-dir %s`",
		s.dir, g.Gen, CommandLine(old), CommandLine(argv), s.dir)
}
