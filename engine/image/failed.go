package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// A generation that verified but could not be restored (a restore that
// failed after it had started) is marked, so that the next restart, such as
// the one after Slurm's next requeue, tries the generations before it first
// instead of failing the same way again. The marker is a file beside the
// generation, so the generation itself stays as it was written.

// failedPrefix starts the name of the marker of a generation that could not
// be restored.
const failedPrefix = ".failed-"

func (s *Store) failedPath(gen int) string {
	return filepath.Join(s.Dir, failedPrefix+GenName(gen))
}

// MarkFailed records that generation gen could not be restored, and why.
func (s *Store) MarkFailed(gen int, why error) error {
	if err := writeFileSync(s.failedPath(gen), []byte(why.Error()+"\n")); err != nil {
		return fmt.Errorf("mark generation %d as failed: %w", gen, err)
	}
	return nil
}

// Failed returns why generation gen could not be restored, or "" when it
// is not marked.
func (s *Store) Failed(gen int) string {
	return readMarker(s.failedPath(gen), "failed")
}

// readMarker returns the reason a marker file at path holds (dflt when it
// holds none), or "" when there is no marker. A marker is never followed
// through a symlink, and only its first 4 KiB are read.
func readMarker(path, dflt string) string {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	why := strings.TrimSpace(string(b[:n]))
	if why == "" {
		why = dflt
	}
	return why
}

// clearMarkers removes the markers of gen, if any.
func (s *Store) clearMarkers(gen int) {
	for _, p := range []string{s.failedPath(gen), s.branchPath(gen)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			logrus.Debugf("remove %s: %v", p, err)
		}
	}
}

// GoodBefore returns the newest generation older than gen that opens and
// verifies, preferring those not marked as failed: where a restore falls
// back to when gen could not be restored. skipped are the generations it
// passed over, with why.
func (s *Store) GoodBefore(gen int) (g *Generation, skipped []error, err error) {
	gens, err := s.Generations()
	if err != nil {
		return nil, nil, err
	}
	var older []int
	for _, n := range gens {
		if n < gen {
			older = append(older, n)
		}
	}
	return s.newestGoodOf(older)
}

// verify is the check NewestGood and GoodBefore make of a generation.
func (s *Store) verify(g *Generation) error {
	if s.DeferPages {
		return g.VerifyRestorable()
	}
	return g.Verify()
}

// newestGoodOf returns the newest generation of gens (ascending) that opens
// and verifies, taking those marked as failed only when no other one is
// left; skipped lists why the newer ones were passed over.
func (s *Store) newestGoodOf(gens []int) (*Generation, []error, error) {
	var skipped []error
	var marked []*Generation
	for i := len(gens) - 1; i >= 0; i-- {
		g, err := s.Open(gens[i])
		if err == nil {
			err = s.verify(g)
		}
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		if why := s.Failed(g.Gen); why != "" {
			marked = append(marked, g)
			skipped = append(skipped, fmt.Errorf("generation %d: an earlier restart could not restore it (%s)", g.Gen, why))
			continue
		}
		if why := s.OnBranch(g.Gen); why != "" {
			marked = append(marked, g)
			skipped = append(skipped, fmt.Errorf("generation %d: on a history branch (%s); `restart %d` takes it", g.Gen, why, g.Gen))
			continue
		}
		return g, skipped, nil
	}
	if len(marked) > 0 {
		// Nothing better: the failure may have had a cause that is gone.
		return marked[0], skipped, nil
	}
	if len(gens) == 0 {
		return nil, skipped, errors.New("no older generation")
	}
	return nil, skipped, fmt.Errorf("none of the %d generations is usable", len(gens))
}
