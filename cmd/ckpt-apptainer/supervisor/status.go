package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
)

// JobStatus is what `ckpt-apptainer status` shows of a running job.
type JobStatus struct {
	SupervisorPID int       `json:"supervisor_pid"`
	JobPID        int       `json:"job_pid"`
	Command       []string  `json:"command"`
	CkptDir       string    `json:"ckpt_dir"`
	Started       time.Time `json:"started"`
	// RestoredFrom is the generation the job was restarted from; 0 for a
	// job launched by this supervisor.
	RestoredFrom int `json:"restored_from,omitempty"`
	// Interval is the time between periodic checkpoints (0: only on
	// request); NextCheckpoint when the next one is due.
	Interval       Duration   `json:"interval"`
	NextCheckpoint *time.Time `json:"next_checkpoint,omitempty"`
	// CheckpointingSince is set while a checkpoint is being taken.
	CheckpointingSince *time.Time      `json:"checkpointing_since,omitempty"`
	Generations        []int           `json:"generations"`
	Last               *LastCheckpoint `json:"last_checkpoint,omitempty"`
}

// LastCheckpoint is the outcome of the supervisor's newest checkpoint
// attempt.
type LastCheckpoint struct {
	Time       time.Time     `json:"time"`
	Generation int           `json:"generation,omitempty"`
	Bytes      int64         `json:"bytes,omitempty"`
	Duration   time.Duration `json:"duration_ns,omitempty"`
	Stopped    time.Duration `json:"stopped_ns,omitempty"`
	// Error is why it failed; Failures how many failed in a row.
	Error    string `json:"error,omitempty"`
	Failures int    `json:"failures,omitempty"`
}

// Duration is a time.Duration that reads as one in JSON ("5m0s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// jobState is the part of a supervisor's state that `status` reads while a
// checkpoint runs.
type jobState struct {
	mu sync.Mutex
	// started is when the job was started or restored, and the periodic
	// timer with it; restoredFrom the generation it was restored from.
	started      time.Time
	restoredFrom int
	// firstAt is when the early first checkpoint is due (zero: none
	// pending).
	firstAt time.Time
	// checkpointing is when the running checkpoint began (zero: none);
	// lastStart when the newest one began.
	checkpointing time.Time
	lastStart     time.Time
	// lastGen is the job's newest generation (restored from, or taken;
	// 0: none); last the outcome of the newest checkpoint attempt, whose
	// Failures counts the failures in a row.
	lastGen int
	last    *LastCheckpoint
	// progress is the reporter of the checkpoint being taken, which
	// clients that asked for it are sent the figures of.
	progress *progressReporter
}

func (st *jobState) setProgress(p *progressReporter) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.progress = p
}

// currentProgress returns the running checkpoint's operation and figures;
// ok is false when none runs.
func (st *jobState) currentProgress() (op string, done, total int64, ok bool) {
	st.mu.Lock()
	p := st.progress
	st.mu.Unlock()
	if p == nil {
		return "", 0, 0, false
	}
	return p.op, p.done.Load(), p.total.Load(), true
}

func (st *jobState) newest() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.lastGen
}

func (st *jobState) setCheckpointing(on bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.checkpointing = time.Time{}
	if on {
		st.checkpointing = time.Now()
		st.lastStart = st.checkpointing
	}
}

// startedSince says whether a checkpoint began at or after t.
func (st *jobState) startedSince(t time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.lastStart.Before(t)
}

func (st *jobState) setRestored(gen int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.restoredFrom = gen
}

// begin records that the job runs from now, with its periodic timer
// started now and the first checkpoint due at firstAt (zero: none early).
func (st *jobState) begin(now, firstAt time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.started, st.firstAt = now, firstAt
}

// firstTaken records that the early first checkpoint is no longer due.
func (st *jobState) firstTaken() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.firstAt = time.Time{}
}

// nextCheckpoint is when the next checkpoint is due at now: the early
// first one, else the periodic timer's next tick; nil with no timer.
func nextCheckpoint(now, ticks, firstAt time.Time, interval time.Duration) *time.Time {
	var next time.Time
	if interval > 0 {
		n := now.Sub(ticks)/interval + 1
		next = ticks.Add(n * interval)
	}
	if !firstAt.IsZero() && !firstAt.Before(now) && (next.IsZero() || firstAt.Before(next)) {
		next = firstAt
	}
	if next.IsZero() {
		return nil
	}
	return &next
}

// status describes the running job.
func (s *supervisor) status() *JobStatus {
	js := &JobStatus{SupervisorPID: os.Getpid(), JobPID: s.jobPID, Command: s.job.Argv, CkptDir: s.dir, Interval: Duration(s.interval)}
	if gens, err := s.store.Generations(); err == nil {
		js.Generations = gens
	}
	st := &s.state
	st.mu.Lock()
	defer st.mu.Unlock()
	js.Started, js.RestoredFrom = st.started, st.restoredFrom
	js.NextCheckpoint = nextCheckpoint(time.Now(), st.started, st.firstAt, s.interval)
	if !st.checkpointing.IsZero() {
		at := st.checkpointing
		js.CheckpointingSince = &at
	}
	if st.last != nil {
		last := *st.last
		js.Last = &last
	}
	return js
}

// RequestStatus asks the supervisor serving dir for its job's status.
func RequestStatus(dir string) (*JobStatus, error) {
	conn, err := connectSupervisor(dir, func() string { return newestText(dir) })
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(conn).Encode(controlRequest{Op: "status"}); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	var js JobStatus
	if err := json.NewDecoder(conn).Decode(&js); err != nil {
		return nil, fmt.Errorf("read the supervisor's answer: %w", err)
	}
	return &js, nil
}

// newestText says what the newest generation in dir is, for a message
// that there is no running job.
func newestText(dir string) string {
	st, err := image.OpenStore(dir, false)
	if err != nil {
		return "; it holds no checkpoint"
	}
	gens, err := st.Generations()
	if err != nil || len(gens) == 0 {
		return "; it holds no checkpoint"
	}
	n := gens[len(gens)-1]
	if g, err := st.Open(n); err == nil {
		return fmt.Sprintf("; its newest checkpoint is generation %d, of %s (`ckpt-apptainer restart --ckpt-dir %s` resumes it)",
			n, g.Manifest.Created.Local().Format(time.DateTime), dir)
	}
	return fmt.Sprintf("; its newest checkpoint is generation %d", n)
}
