package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// FinishedName is the file that says the directory's job ran to its end.
// `run` reads it so that a job which finished is started anew instead of
// being resumed from a checkpoint taken before its end.
const FinishedName = ".finished"

// Finished records how a job ended by itself.
type Finished struct {
	Time     time.Time `json:"time"`
	ExitCode int       `json:"exit_code"`
	// Argv is the job's command line, so a reader can tell which job ended.
	Argv []string `json:"argv"`
}

// MarkFinished records that the job ended by itself.
func (s *Store) MarkFinished(f Finished) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := s.ClearFinished(); err != nil {
		return err
	}
	if err := writeFileSync(filepath.Join(s.Dir, FinishedName), append(b, '\n')); err != nil {
		return fmt.Errorf("record the job's end: %w", err)
	}
	return nil
}

// Finished returns the record of the job's end, or nil when the job has not
// ended by itself since it was last started.
func (s *Store) Finished() (*Finished, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, FinishedName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", FinishedName, err)
	}
	var f Finished
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s in %s: %w", FinishedName, s.Path, err)
	}
	return &f, nil
}

// ClearFinished forgets the job's end: the job runs again.
func (s *Store) ClearFinished() error {
	err := os.Remove(filepath.Join(s.Dir, FinishedName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear %s: %w", FinishedName, err)
	}
	return nil
}
