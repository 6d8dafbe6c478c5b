package image

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// CheckpointFailedName is the record of the newest checkpoint that failed.
// A process of the job that asked for a checkpoint cannot be answered over
// a connection (see the supervisor's requests from inside the job): it
// watches the directory for a new generation, or for this record.
const CheckpointFailedName = ".checkpoint-failed"

// CheckpointFailure is what CheckpointFailedName holds.
type CheckpointFailure struct {
	Time  time.Time `json:"time"`
	Error string    `json:"error"`
}

// RecordCheckpointFailure replaces the record of the newest failed
// checkpoint with f.
func (s *Store) RecordCheckpointFailure(f CheckpointFailure) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := s.replaceFile(CheckpointFailedName, b); err != nil {
		return fmt.Errorf("record the failed checkpoint: %w", err)
	}
	return nil
}

// LastCheckpointFailure returns the record of the newest failed
// checkpoint, or nil when there is none that reads.
func (s *Store) LastCheckpointFailure() *CheckpointFailure {
	b, err := os.ReadFile(filepath.Join(s.Dir, CheckpointFailedName))
	if err != nil {
		return nil
	}
	var f CheckpointFailure
	if json.Unmarshal(b, &f) != nil {
		return nil
	}
	return &f
}
