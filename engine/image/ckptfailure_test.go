package image

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCheckpointFailureRecord: the newest failure replaces the one before;
// a directory without one, or with one that does not read, has none; a
// replacement a crash left half-written is cleaned away.
func TestCheckpointFailureRecord(t *testing.T) {
	s := newStore(t)
	if f := s.LastCheckpointFailure(); f != nil {
		t.Fatalf("a new directory has failure %+v", f)
	}
	at := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	must(t, s.RecordCheckpointFailure(CheckpointFailure{Time: at, Error: "first"}))
	must(t, s.RecordCheckpointFailure(CheckpointFailure{Time: at.Add(time.Minute), Error: "pid 2: fd 3: tcp socket"}))
	if f := s.LastCheckpointFailure(); f == nil || f.Error != "pid 2: fd 3: tcp socket" || !f.Time.Equal(at.Add(time.Minute)) {
		t.Fatalf("newest failure %+v", f)
	}
	must(t, os.WriteFile(filepath.Join(s.Dir, CheckpointFailedName), []byte("{"), 0o600))
	if f := s.LastCheckpointFailure(); f != nil {
		t.Errorf("a record that does not read gave %+v", f)
	}
	left := filepath.Join(s.Dir, tmpFilePrefix+"123"+CheckpointFailedName)
	must(t, os.WriteFile(left, []byte("{"), 0o600))
	must(t, s.CleanStale())
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("CleanStale left %s: %v", left, err)
	}
}
