package supervisor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// slurmTimeout bounds each scontrol call: a slurmctld that does not answer
// must not keep a preempted job's supervisor past its grace time.
const slurmTimeout = 30 * time.Second

// slurmJob is what `scontrol show job -o` says about a job, as far as the
// requeue decision needs it.
type slurmJob struct {
	State    string // JobState: RUNNING, COMPLETING, PENDING, ...
	Reason   string // Reason: None, TimeLimit, BeginTime, ...
	Restarts int    // how often Slurm has requeued the job
}

// parseSlurmJob reads the one-line record of `scontrol show job -o ID`.
func parseSlurmJob(out string) (slurmJob, error) {
	var j slurmJob
	seen := 0
	for _, field := range strings.Fields(out) {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			continue
		}
		switch k {
		case "JobState":
			j.State, seen = v, seen|1
		case "Reason":
			j.Reason = v
		case "Restarts":
			n, err := strconv.Atoi(v)
			if err != nil {
				return j, fmt.Errorf("field Restarts=%q: %w", v, err)
			}
			j.Restarts, seen = n, seen|2
		}
	}
	if seen != 3 {
		return j, fmt.Errorf("no JobState or Restarts in %q", strings.TrimSpace(out))
	}
	return j, nil
}

// requeueAction is what the supervisor does about a stopped job.
type requeueAction int

const (
	requeueAsk       requeueAction = iota // scontrol requeue
	requeueBySlurm                        // Slurm requeues it already
	requeueNotWanted                      // the job was cancelled
)

// decideRequeue tells apart the ways a SIGTERM reaches a job. Slurm marks
// a job before it signals it, but `scontrol show job` shows a job being
// ended as COMPLETING whatever the cause, so the other fields decide:
//   - preemption in REQUEUE mode and `scontrol requeue` have already reset
//     the record for the next run (Restarts went up, or PENDING);
//   - the time limit leaves Reason=TimeLimit: the job wants more time;
//   - scancel leaves Reason=None: the user wants the job gone, and a
//     requeue would bring it back against their will;
//   - a job still RUNNING was signalled on purpose (its --signal warning,
//     `scancel --signal=TERM --batch`, kill): it asked to stop and go on
//     later.
//
// restarts is $SLURM_RESTART_COUNT, the job's Restarts when it started.
func decideRequeue(j slurmJob, restarts int) requeueAction {
	if j.Restarts > restarts {
		return requeueBySlurm
	}
	switch {
	case j.State == "PENDING", strings.HasPrefix(j.State, "REQUEUE"):
		return requeueBySlurm
	case j.State == "COMPLETING" || j.State == "CANCELLED":
		if j.Reason == "TimeLimit" {
			return requeueAsk
		}
		return requeueNotWanted
	}
	return requeueAsk
}

// scontrol runs scontrol with args and returns its output.
func scontrol(args ...string) (string, error) {
	path, err := exec.LookPath("scontrol")
	if err != nil {
		return "", fmt.Errorf("scontrol not found in $PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), slurmTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("scontrol %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// requeueSlurmJob asks Slurm to queue the job the supervisor runs in again,
// unless Slurm does so itself or the user cancelled the job. Slurm then
// ends what is left of this job step, so call it last. dir names the
// checkpoint directory for the messages.
func requeueSlurmJob(log logrus.FieldLogger, dir string) error {
	id := os.Getenv("SLURM_JOB_ID")
	if id == "" {
		return fmt.Errorf("--requeue: not running in a Slurm job ($SLURM_JOB_ID is not set); resume the job with `ckpt-apptainer run` or `restart`")
	}
	restarts, _ := strconv.Atoi(os.Getenv("SLURM_RESTART_COUNT"))
	action := requeueAsk
	if out, err := scontrol("show", "job", "-o", id); err != nil {
		log.Debugf("job state unknown (%v): asking for the requeue", err)
	} else if j, err := parseSlurmJob(out); err != nil {
		log.Debugf("job state unknown (%v): asking for the requeue", err)
	} else {
		log.Debugf("Slurm job %s: %+v (restarts at start %d)", id, j, restarts)
		action = decideRequeue(j, restarts)
	}
	switch action {
	case requeueBySlurm:
		log.Infof("Slurm requeues job %s itself; it resumes from its checkpoint when it runs again", id)
		return nil
	case requeueNotWanted:
		log.Infof("job %s was cancelled, so it is not requeued; its checkpoint stays in %s and submitting the job again resumes it", id, dir)
		return nil
	}
	// Said first: once Slurm has the request it may end this step before
	// another line is written.
	log.Infof("asking Slurm to requeue job %s; it resumes from its checkpoint when it runs again", id)
	if _, err := scontrol("requeue", id); err != nil {
		return fmt.Errorf("--requeue: %w (is the job requeueable? submit it with `sbatch --requeue`)", err)
	}
	return nil
}

// pmiServerVars are set in a process whose MPI process manager is outside
// it: Slurm's (srun --mpi=pmix or pmi2) or another launcher's.
var pmiServerVars = []string{"PMIX_SERVER_URI41", "PMIX_SERVER_URI4", "PMIX_SERVER_URI3", "PMIX_SERVER_URI21", "PMIX_SERVER_URI2", "PMIX_SERVER_URI", "PMI_FD", "PMI_PORT"}

// externalPMI returns the variable of env that says the job is an MPI rank
// started by srun (or another launcher outside it), whose PMI server a
// checkpoint cannot take along; "" when there is none.
func externalPMI(env []string) string {
	for _, name := range pmiServerVars {
		for _, e := range env {
			if strings.HasPrefix(e, name+"=") {
				return name
			}
		}
	}
	return ""
}
