package supervisor

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
)

// Launch starts argv as a new job and supervises it until it ends.
func Launch(o Options, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("launch: no command given; usage: ckpt-apptainer launch [flags] -- CMD [ARGS...]")
	}
	return supervised(o, func(s *supervisor) error {
		if gens, _ := s.store.Generations(); len(gens) > 0 {
			s.log.Warnf("checkpoint directory %s already holds generations up to %d; this job's checkpoints continue the numbering (use `restart` to resume the old job)", s.dir, gens[len(gens)-1])
		}
		return launchJob(s, argv)
	})
}

// supervised opens and locks the checkpoint directory, runs body as the
// job's supervisor and releases everything; then, when a signal stopped
// the job and --requeue was given, asks Slurm to requeue it. The requeue
// comes last because Slurm ends what is left of the job step.
func supervised(o Options, body func(*supervisor) error) error {
	s, err := openSupervisor(o)
	if err != nil {
		return err
	}
	err = body(s)
	s.close()
	if s.requeueNow {
		if rerr := requeueSlurmJob(s.log, s.dir); rerr != nil {
			s.log.Error(rerr)
		}
	}
	return err
}

// launchJob starts argv as a new job and supervises it until it ends.
func launchJob(s *supervisor, argv []string) error {
	if err := s.store.ClearFinished(); err != nil {
		return err
	}
	s.launched = true
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	s.job = image.Job{Argv: argv, Env: os.Environ(), Cwd: cwd, UID: os.Getuid(), GID: os.Getgid()}
	s.container = parseContainer(argv, s.job.Env)
	if v := externalPMI(s.job.Env); v != "" {
		s.log.Warnf("this job is an MPI rank started by srun or another launcher outside it ($%s is set): its connection to that launcher's PMI server cannot be checkpointed, and its checkpoints will be refused; start the ranks inside the job instead: ckpt-apptainer launch --net private -- mpirun -np N ./app (one node)", v)
	}
	if s.container != nil && s.container.refused != nil {
		s.log.Warnf("checkpoints of this job will be refused: %v", s.container.refused)
	}
	var instanceState string
	if s.container.isInstance() && s.container.refused == nil {
		if instanceState, err = s.claimInstance(); err != nil {
			return fmt.Errorf("launch: %w", err)
		}
	}
	if err := s.makeCgroup(); err != nil {
		return err
	}
	if s.cpuSeen, err = engine.CPUSeen(nil); err != nil {
		s.log.Warnf("%v: checkpoints cannot tell which CPUs the job may move to", err)
	}
	opts := namespaces.Options{TimeNamespace: s.wantTimeNamespace(), OutliveMain: s.container.isInstance(),
		PrivateNetwork: s.opts.Net == NetPrivate}
	if err := s.startSandbox(opts); err != nil {
		return err
	}
	env := s.job.Env
	if !kernel.Has(kernel.PtraceRseq) {
		// Its checkpoints could not see rseq areas registered by a glibc
		// whose symbols cannot be read (static programs); glibc needs
		// none.
		s.log.Infof("%s: the job runs with glibc's rseq off (GLIBC_TUNABLES=%s)",
			kernel.Current().Lacks(kernel.PtraceRseq), engine.RseqTunable)
		env = withRseqOff(env, s.container != nil)
	}
	// The job's own `ckpt-apptainer checkpoint` finds the directory.
	env = append(slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "CKPT_APPTAINER_DIR=") }),
		"CKPT_APPTAINER_DIR="+s.dir)
	hostPID, nsPID, err := s.sb.Run(argv, env, cwd)
	if err != nil {
		s.sb.Kill()
		return err
	}
	s.jobPID = hostPID
	// Only once the job runs: a launch refused for its flags leaves a
	// directory's settings as they were.
	s.recordSettings()
	s.log.Infof("job %q started: host pid %d (%d in its sandbox), supervisor %d, checkpoints in %s", CommandLine(argv), hostPID, nsPID, os.Getpid(), s.dir)
	if instanceState != "" {
		go s.publishInstance(instanceState)
	}
	return s.supervise()
}

// wantTimeNamespace says whether a new job gets a time namespace: unless
// --no-timens, where the kernel has them; without, it says what the user
// loses.
func (s *supervisor) wantTimeNamespace() bool {
	if s.opts.NoTimens {
		return false
	}
	if !kernel.Has(kernel.TimeNamespace) {
		s.log.Infof("%s: the job's CLOCK_MONOTONIC and CLOCK_BOOTTIME jump across restarts",
			kernel.Current().Lacks(kernel.TimeNamespace))
		return false
	}
	return true
}

// withRseqOff returns env with glibc's rseq turned off through
// GLIBC_TUNABLES, added to the tunables already there; for a container
// job also through APPTAINERENV_GLIBC_TUNABLES, which Apptainer passes
// into the container even with --cleanenv.
func withRseqOff(env []string, container bool) []string {
	out := append([]string(nil), env...)
	names := []string{"GLIBC_TUNABLES"}
	if container {
		names = append(names, "APPTAINERENV_GLIBC_TUNABLES")
	}
	for _, name := range names {
		i := slices.IndexFunc(out, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		switch {
		case i < 0:
			out = append(out, name+"="+engine.RseqTunable)
		case strings.Contains(out[i], "glibc.pthread.rseq="):
			// The user chose: keep it.
		case out[i] == name+"=":
			out[i] += engine.RseqTunable
		default:
			out[i] += ":" + engine.RseqTunable
		}
	}
	return out
}
