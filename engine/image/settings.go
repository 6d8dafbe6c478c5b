package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SettingsName is the file that holds the settings the directory's job was
// last supervised with (its interval, how many generations to keep, ...),
// so that a restart goes on with them. The store keeps the bytes; what they
// mean is the supervisor's.
const SettingsName = "settings.json"

// tmpFilePrefix names a small file of the store being replaced
// (replaceFile); CleanStale removes one a crash left behind.
const tmpFilePrefix = ".tmp-file-"

// replaceFile replaces the store's file name with b: a reader sees the old
// file or the new one, never part of one.
func (s *Store) replaceFile(name string, b []byte) error {
	tmp := filepath.Join(s.Dir, fmt.Sprintf("%s%d%s", tmpFilePrefix, os.Getpid(), name))
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := writeFileSync(tmp, b); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir, name)); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(s.Dir)
}

// WriteSettings replaces the settings file with b.
func (s *Store) WriteSettings(b []byte) error {
	if err := s.replaceFile(SettingsName, b); err != nil {
		return fmt.Errorf("record the job's settings: %w", err)
	}
	return nil
}

// Settings returns the settings file's bytes, or nil when the directory has
// none (a job checkpointed by an older version).
func (s *Store) Settings() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, SettingsName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the job's settings: %w", err)
	}
	return b, nil
}

// Peek returns a Store on dir for reading which generations are committed
// and their manifests, without the checks OpenStore makes of who owns dir
// and the directories above it: a process inside the job's user namespace
// sees those owners as nobody. Nothing read through it is restored.
func Peek(dir string) *Store { return &Store{Dir: dir, Path: dir, pinned: -1} }
