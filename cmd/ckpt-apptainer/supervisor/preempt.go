package supervisor

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Preemption: Slurm ends a job on a ckpt partition with SIGTERM (preemption,
// scancel, the end of GraceTime's warning), or with the signal the job asked
// for in advance (#SBATCH --signal=B:USR1@60). The supervisor answers either
// with a final checkpoint and stops the job; with --requeue it then has
// the job queued again (slurm.go decides whether Slurm does that itself),
// so `run` resumes it.

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
