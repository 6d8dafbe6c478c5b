package image

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// HookLogName is the file in the checkpoint directory that records the
// hooks that ran after a generation was committed (postcheckpoint) or
// around a restart from it (prerestore, postrestore): one JSON HookRun per
// line. A generation is immutable once committed, so these cannot go into
// its manifest.
const HookLogName = ".hooks.log"

// hookLogMax bounds the log: past it, the older half is dropped, so a job
// that checkpoints every few minutes for months does not grow it forever.
const hookLogMax = 1 << 20

// AppendHookLog appends runs to the directory's hook log.
func (s *Store) AppendHookLog(runs []HookRun) error {
	if len(runs) == 0 {
		return nil
	}
	path := filepath.Join(s.Dir, HookLogName)
	if fi, err := os.Stat(path); err == nil && fi.Size() > hookLogMax {
		if err := s.trimHookLog(path); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("hook log: %w", err)
	}
	enc := json.NewEncoder(f)
	for _, r := range runs {
		if err := enc.Encode(r); err != nil {
			f.Close()
			return fmt.Errorf("hook log: %w", err)
		}
	}
	return f.Close()
}

// trimHookLog keeps the newer half of the log.
func (s *Store) trimHookLog(path string) error {
	runs, err := s.HookLog(-1)
	if err != nil {
		return err
	}
	runs = runs[len(runs)/2:]
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("hook log: %w", err)
	}
	enc := json.NewEncoder(f)
	for _, r := range runs {
		enc.Encode(r)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("hook log: %w", err)
	}
	return os.Rename(tmp, path)
}

// HookLog returns the logged hook runs of generation gen, oldest first;
// gen < 0 returns all of them. Lines that do not parse (a write cut short
// by a crash) are skipped.
func (s *Store) HookLog(gen int) ([]HookRun, error) {
	f, err := os.Open(filepath.Join(s.Dir, HookLogName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("hook log: %w", err)
	}
	defer f.Close()
	var runs []HookRun
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r HookRun
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		if gen < 0 || r.Generation == gen {
			runs = append(runs, r)
		}
	}
	return runs, sc.Err()
}
