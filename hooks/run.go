package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// Result is what came of running one hook.
type Result struct {
	Event    Event
	Hook     Hook
	Start    time.Time
	Duration time.Duration
	// ExitCode is the hook's exit status; -1 when it did not exit by
	// itself (timeout, cancellation, signal, could not start).
	ExitCode int
	// Err is nil when the hook exited with status 0; else it says why
	// not, without naming the event or hook (Run's error does that).
	Err error
	// Output is the end of what the hook wrote to stdout and stderr
	// together, at most outputTail bytes.
	Output string
}

// ErrTimedOut matches the error of a hook killed for running past its
// timeout or past the caller's deadline.
var ErrTimedOut = errors.New("timed out")

// Run runs hooks for event one after the other, each with state on its
// stdin. For an event that StopsOnFailure it stops at the first hook that
// fails; otherwise it runs every hook. The error names each failed hook
// (event, path, source) and joins them; the results cover every hook that
// was started. When ctx is done Run starts no further hook and says how
// many were left. A nil log discards the hooks' output.
func Run(ctx context.Context, log logrus.FieldLogger, event Event, hooks []Hook, state State) ([]Result, error) {
	if !event.Valid() {
		return nil, fmt.Errorf("unknown hook event %q (valid: %s)", event, eventNames())
	}
	state.Event = event
	if state.OCIVersion == "" {
		state.OCIVersion = specs.Version
	}
	if state.Bundle == "" {
		state.Bundle = state.CheckpointDir
	}
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	stdin, err := json.Marshal(state)
	if err != nil {
		return nil, fmt.Errorf("%s hooks: state: %w", event, err)
	}
	var results []Result
	var errs []error
	for i, h := range hooks {
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s hooks: %d of %d not run: %w", event, len(hooks)-i, len(hooks), context.Cause(ctx)))
			break
		}
		log.WithField("source", h.Source).Debugf("running %s hook %s", event, h.Path)
		r := runOne(ctx, log, event, h, state, stdin)
		results = append(results, r)
		if r.Err == nil {
			continue
		}
		errs = append(errs, fmt.Errorf("%s hook %s (%s): %w", event, h.Path, h.Source, r.Err))
		if event.StopsOnFailure() {
			if left := len(hooks) - i - 1; left > 0 {
				errs = append(errs, fmt.Errorf("%s hooks: stopped, %d not run", event, left))
			}
			break
		}
	}
	return results, errors.Join(errs...)
}

// runOne runs h and waits for it, its process group and its output.
func runOne(ctx context.Context, log logrus.FieldLogger, event Event, h Hook, state State, stdin []byte) (r Result) {
	r = Result{Event: event, Hook: h, Start: time.Now(), ExitCode: -1}
	defer func() { r.Duration = time.Since(r.Start) }()

	var cmd *exec.Cmd
	if h.Container {
		var err error
		if cmd, err = containerCommand(h, targetPID(state)); err != nil {
			r.Err = err
			return r
		}
	} else {
		cmd = &exec.Cmd{Path: h.Path, Args: h.Args}
	}
	cmd.Env = hookEnv(os.Environ(), h.Env, state)

	out := newCapture(log.WithField("source", h.Source), fmt.Sprintf("%s hook %s: ", event, h.Name()))
	p, err := start(cmd, stdin, out)
	if err != nil {
		r.Err = err
		return r
	}
	hctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	killedAt := p.wait(hctx)
	killed := !killedAt.IsZero()
	r.Output = out.tail()

	ps := cmd.ProcessState
	if ps == nil {
		r.Err = errors.New("lost track of the hook process")
		return r
	}
	r.ExitCode = ps.ExitCode()
	switch {
	case ps.Exited() && ps.ExitCode() == 0:
		return r
	case ps.Exited() || !killed:
		r.Err = fmt.Errorf("%s%s", ps, outputNote(r.Output))
	case ctx.Err() == nil:
		r.Err = fmt.Errorf("%w after %ds%s", ErrTimedOut, int(h.timeout()/time.Second), outputNote(r.Output))
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		r.Err = fmt.Errorf("%w after %.1fs (the caller's deadline)%s", ErrTimedOut, killedAt.Sub(r.Start).Seconds(), outputNote(r.Output))
	default:
		r.Err = fmt.Errorf("cancelled after %.1fs: %w%s", killedAt.Sub(r.Start).Seconds(), context.Cause(ctx), outputNote(r.Output))
	}
	return r
}

// targetPID is the process whose namespaces a container hook enters: the
// container's application for a container job, else the job's main
// process (the job sandbox).
func targetPID(s State) int {
	if s.Container != nil && s.Container.AppPID != 0 {
		return s.Container.AppPID
	}
	return s.PID
}
