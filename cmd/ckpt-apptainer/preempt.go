package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Preemption: Slurm ends a job on a ckpt partition with SIGTERM (preemption,
// scancel, the end of GraceTime's warning), or with the signal the job asked
// for in advance (#SBATCH --signal=B:USR1@60). The supervisor answers either
// with a final checkpoint and stops the job; with --requeue it then asks
// Slurm to queue the job again, so `run` resumes it.

// parseStopSignal reads --signal: a name (USR1, SIGUSR1), a number, or the
// form #SBATCH --signal takes ([B:|R:]SIG[@SECONDS]), so a user can copy
// that line.
func parseStopSignal(s string) (syscall.Signal, error) {
	spec := s
	if i := strings.IndexByte(spec, ':'); i >= 0 {
		spec = spec[i+1:]
	}
	spec, _, _ = strings.Cut(spec, "@")
	spec = strings.ToUpper(strings.TrimSpace(spec))
	var sig syscall.Signal
	if n, err := strconv.Atoi(spec); err == nil {
		sig = syscall.Signal(n)
	} else {
		sig = unix.SignalNum("SIG" + strings.TrimPrefix(spec, "SIG"))
	}
	if sig <= 0 || sig > 64 {
		return 0, fmt.Errorf("--signal %q: not a signal name or number (e.g. USR1, SIGUSR2, 10, or the #SBATCH form B:USR1@60)", s)
	}
	switch sig {
	case unix.SIGKILL, unix.SIGSTOP:
		return 0, fmt.Errorf("--signal %q: %v cannot be caught, so it cannot start a checkpoint (Slurm's --signal=B:USR1@60 is the usual choice)", s, unix.SignalName(sig))
	case unix.SIGCHLD, unix.SIGCONT, unix.SIGPIPE, unix.SIGURG, unix.SIGWINCH:
		return 0, fmt.Errorf("--signal %q: %v is sent for other reasons than preemption (Slurm sends SIGCONT with every signal); use USR1 or USR2", s, unix.SignalName(sig))
	}
	return sig, nil
}

// requeueTimeout bounds `scontrol requeue`: a slurmctld that does not
// answer must not keep a preempted job's supervisor past its grace time.
const requeueTimeout = 30 * time.Second

// requeueSlurmJob asks Slurm to queue the job the supervisor runs in again.
// Slurm then ends what is left of this job step, so call it last.
func requeueSlurmJob(log logrus.FieldLogger) error {
	id := os.Getenv("SLURM_JOB_ID")
	if id == "" {
		return fmt.Errorf("--requeue: not running in a Slurm job ($SLURM_JOB_ID is not set); resume the job with `ckpt-apptainer run` or `restart`")
	}
	scontrol, err := exec.LookPath("scontrol")
	if err != nil {
		return fmt.Errorf("--requeue: scontrol not found in $PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requeueTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, scontrol, "requeue", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("scontrol requeue %s: %w: %s (is the job requeueable? submit it with `sbatch --requeue`)", id, err, strings.TrimSpace(string(out)))
	}
	log.Infof("asked Slurm to requeue job %s; it resumes from its checkpoint when it runs again", id)
	return nil
}
