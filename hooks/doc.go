// Package hooks owns lifecycle hooks: programs a site or a user runs
// around checkpoint and restore (flush a file, stage data, re-register
// with a service). It reads and checks hooks files, and runs the hooks of
// an event with the job's state on their stdin, in process groups of their
// own, with timeouts, logging their output. It does not decide when an
// event happens; the supervisor calls Run at the right moments.
//
// # Hooks files
//
// A hooks file is JSON modelled on the "hooks" object of an OCI
// config.json; each entry is a runtime-spec Hook plus "container":
//
//	{
//	  "hooks": {
//	    "precheckpoint": [
//	      {"path": "/usr/local/bin/flush-db", "args": ["flush-db", "--sync"], "timeout": 30}
//	    ],
//	    "postcheckpoint": [
//	      {"path": "/opt/site/stage-out", "env": ["DEST=/archive"]},
//	      {"path": "/app/bin/resume", "container": true}
//	    ],
//	    "prerestore": [...],
//	    "postrestore": [...]
//	  }
//	}
//
// The events are precheckpoint, postcheckpoint, prerestore and
// postrestore. Decoding is strict: an unknown field or event is an error
// naming the file, the event and index, and what is valid. path must be
// absolute; timeout, in seconds, must be > 0 and defaults to
// DefaultTimeout (60 s); env entries are KEY=VALUE; args[0] is the program
// name, as in runtime-spec, and an empty args means [path].
//
// # Order
//
// Load reads the site file, then the user's file (ckpt-apptainer's
// --hooks FILE). The site file is $CKPT_APPTAINER_HOOKS when that is set
// (so a site module can point at its own; set and empty means none), else
// /etc/ckpt-apptainer/hooks.json. A missing default site file is fine; a
// missing $CKPT_APPTAINER_HOOKS or --hooks file is an error. The hooks of
// an event run one at a time: the site's first, then the user's, each in
// file order. Parse reads a hooks file held in memory, such as one shipped
// inside a container image; its caller names the source.
//
// # What a hook gets
//
// Stdin holds one JSON object, State: the runtime-spec state fields
// (ociVersion, id, status, pid, bundle, annotations) followed by event,
// checkpointDir, generation, argv, container (image, runtimePid, appPid;
// only for a container job), slurmJobId and error.
//
// Unlike an OCI hook, which gets exactly its entry's env, a hook here
// inherits the caller's environment (HPC hooks need $HOME, $PATH,
// $SLURM_*), then the entry's env entries (which replace inherited values),
// then CKPT_APPTAINER_EVENT, CKPT_APPTAINER_DIR (the checkpoint directory)
// and CKPT_APPTAINER_GENERATION from the state, and CKPT_APPTAINER_ERROR
// when the state carries an error. A host hook runs in the caller's
// working directory.
//
// # Timeouts and output
//
// Each hook runs in a process group of its own. It may run for its
// timeout, or until the caller's context is done (a preemption grace
// time), whichever comes first; then its whole group gets SIGKILL and the
// error says "timed out after Ns" (ErrTimedOut). When the hook's main
// process exits, whatever it left behind in its group is killed too: a
// hook is a step, not a way to start daemons (a process that must stay
// has to leave the group with setsid and close its stdout and stderr).
// Stdout and stderr go into one pipe; each line is logged at Info, after
// the event and the hook's name, and the last 4 KiB are kept in
// Result.Output. An error for a hook that failed quotes the end of its
// output.
//
// # Failure policy
//
// For precheckpoint and prerestore, Run stops at the first hook that fails
// (non-zero exit, signal, timeout, could not start) and returns an error
// naming it: the caller aborts the checkpoint or the restore. For
// postcheckpoint and postrestore, Run runs every hook and returns the
// failures joined: the caller logs them as warnings. Event.StopsOnFailure
// says which is which.
//
// The supervisor runs postcheckpoint after every checkpoint attempt whose
// precheckpoint hooks were started, as a finally clause: after a
// committed checkpoint with the new generation and no error, after a
// failed one (a precheckpoint hook failed, or the dump did) with State.Error
// and CKPT_APPTAINER_ERROR saying why. So a hook that paused something
// before the checkpoint always gets to resume it. Postrestore runs only
// after a successful restore, once the job runs again.
//
// # Container hooks
//
// "container": true runs the hook inside the namespaces of the job's
// application, in its root and working directory, so path is a path
// inside the container: for an Apptainer job the namespaces of
// State.Container.AppPID, for a plain job those of State.PID (the job
// sandbox). The hook is started with nsenter (util-linux), which must be
// in the caller's PATH. Only the namespaces the target does not share with
// the caller are joined (user, mount, pid, ipc, uts, net, cgroup, time),
// and the hook keeps the caller's credentials; this works unprivileged
// because the caller owns the job's user namespaces. When the target's
// user namespace is nested in another (Apptainer's inside the job
// sandbox's), two nsenter run one after the other, because an unprivileged
// process loses its power over the outer namespaces once it is in the
// inner one. nsenter passes no program name, so args[0] is ignored for a
// container hook: it sees path as its argv[0]. The hook's processes get
// pids in the job's PID namespace but stay out of the job's cgroup, and
// none outlives the hook (see above), so none is ever checkpointed.
// Container hooks are refused for prerestore, when no process of the job
// exists, and fail when no job process runs (State.PID and AppPID 0).
package hooks
