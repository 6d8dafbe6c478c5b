package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
)

// A job restarted from a generation older than the newest goes on from
// there: the generations after it hold a future that did not happen. They
// stay, as a history branch that `list` shows and an explicit `restart N`
// can still take, but a restart that picks the newest good generation
// passes over them, and --keep removes them before any generation of the
// job's line. Each is marked by a file beside it, as failed ones are.

// branchPrefix starts the name of the marker of a generation on a history
// branch.
const branchPrefix = ".branch-"

func (s *Store) branchPath(gen int) string {
	return filepath.Join(s.Dir, branchPrefix+GenName(gen))
}

// Branch makes the generations after gen a history branch, the job having
// been restored from gen, and points latest at gen so that the job's next
// incremental checkpoint is written on the generation it resumed from.
// It returns the generations it marked; those already marked, or marked
// as failed (a restart that fell back past them), are left as they are.
func (s *Store) Branch(gen int, at time.Time) ([]int, error) {
	gens, err := s.Generations()
	if err != nil {
		return nil, err
	}
	s.Rejoin(gen)
	var marked []int
	why := fmt.Sprintf("generation %d was restarted at %s", gen, at.Local().Format(time.DateTime))
	for _, n := range gens {
		if n <= gen || s.Failed(n) != "" || s.OnBranch(n) != "" {
			continue
		}
		if err := writeFileSync(s.branchPath(n), []byte(why+"\n")); err != nil {
			return marked, fmt.Errorf("mark generation %d as a history branch: %w", n, err)
		}
		marked = append(marked, n)
	}
	if latest, err := s.Latest(); err == nil && latest != gen {
		if err := s.replaceLatest(gen); err != nil {
			return marked, err
		}
	}
	return marked, nil
}

// OnBranch returns why generation gen is on a history branch, or "" when
// it is on the job's line.
func (s *Store) OnBranch(gen int) string {
	return readMarker(s.branchPath(gen), "an older generation was restarted")
}

// Rejoin takes gen off its history branch: a user restarted it explicitly.
func (s *Store) Rejoin(gen int) {
	if err := os.Remove(s.branchPath(gen)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		logrus.Debugf("remove %s: %v", s.branchPath(gen), err)
	}
}
