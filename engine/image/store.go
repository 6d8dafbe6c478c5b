package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/safepath"
)

// Names inside a checkpoint directory. Everything that is not a committed
// generation starts with a dot, so a listing of the directory shows the user
// only gen-NNNNNN and latest.
const (
	// LatestName is the symlink that points at the newest committed generation.
	LatestName = "latest"
	// LockName is the file a running supervisor holds an exclusive flock on.
	LockName = ".lock"

	genPrefix       = "gen-"
	tmpGenPrefix    = ".tmp-gen-"
	trashPrefix     = ".trash-"
	tmpLatestPrefix = ".tmp-latest-"
)

// Owner-only modes: an image holds process memory, which may hold secrets.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// Store is one job's checkpoint directory. Only one supervisor may write to
// it at a time (see Lock); readers need no lock because generations are
// immutable once committed.
type Store struct {
	// Dir is the path every file of the store is reached through: the
	// directory's name, or once pinned (Pin), its descriptor's
	// /proc/self/fd link.
	Dir string
	// Path is the directory's name, for messages.
	Path string
	// pinned is the descriptor Pin holds, or -1.
	pinned int
	// DeferPages makes NewestGood and GoodBefore leave the checksums of
	// the generations' own page files to the restore, which verifies them
	// as it reads them (Generation.VerifyRestorable).
	DeferPages bool
}

// Info summarises one committed generation for `ckpt-apptainer list`.
type Info struct {
	Generation int
	Time       time.Time
	SizeBytes  int64
	Processes  int
	// Latest is true for the generation the latest symlink points at.
	Latest bool
	// Valid is false when the generation cannot be opened or, when List was
	// asked to verify, when a checksum does not match; Error says why.
	Valid bool
	Error string
	// RestoreFailed is why a restart could not restore the generation,
	// or "".
	RestoreFailed string
	// Branch is why the generation is on a history branch (an older one
	// was restarted), or "".
	Branch string
	// Parent is the generation an incremental one was written on (0 for
	// a full one); Needs the generations whose data it reads.
	Parent int
	Needs  []int
}

// GenName is the directory name of committed generation gen.
func GenName(gen int) string { return fmt.Sprintf("%s%06d", genPrefix, gen) }

// OpenStore opens the checkpoint directory dir, creating it (mode 0700) when
// create is set. An existing directory that other users can read is
// restricted to 0700; one owned by another user is refused, since its owner
// could read or replace the images.
func OpenStore(dir string, create bool) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open checkpoint directory: no directory given")
	}
	if create {
		if err := os.MkdirAll(dir, dirMode); err != nil {
			return nil, fmt.Errorf("create checkpoint directory %s: %w", dir, err)
		}
	}
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("checkpoint directory %s does not exist", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open checkpoint directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("checkpoint directory %s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := os.Geteuid(); int(st.Uid) != uid {
			return nil, fmt.Errorf("checkpoint directory %s belongs to uid %d, not to you (uid %d): refusing to store process memory there", dir, st.Uid, uid)
		}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 || perm&0o700 != 0o700 {
		if perm&0o022 != 0 {
			if err := checkEntriesOwned(dir); err != nil {
				return nil, fmt.Errorf("checkpoint directory %s had mode %04o, and %w: refused, since others could have planted it. Move the directory away and check what is in it", dir, perm, err)
			}
		}
		if err := os.Chmod(dir, dirMode); err != nil {
			return nil, fmt.Errorf("checkpoint directory %s has mode %04o and cannot be restricted to 0700: %w", dir, perm, err)
		}
		logrus.Warnf("checkpoint directory %s had mode %04o; restricted it to 0700 because images hold process memory", dir, perm)
	}
	if err := safepath.Check(dir, "checkpoint directory"); err != nil {
		return nil, fmt.Errorf("%w (keep checkpoints below directories only you and root can write)", err)
	}
	return &Store{Dir: dir, Path: dir, pinned: -1}, nil
}

// checkEntriesOwned fails naming an entry of dir that someone other than
// the caller owns.
func checkEntriesOwned(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	uid := os.Geteuid()
	for _, e := range ents {
		fi, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
			return fmt.Errorf("its entry %s belongs to uid %d", e.Name(), st.Uid)
		}
	}
	return nil
}

// Pin makes every later access of the store go through a descriptor of the
// directory opened now: a rename of the directory or of one above it, or a
// directory put in its place, no longer changes where the generations go.
// The supervisor pins its store for the life of the job.
func (s *Store) Pin() error {
	if s.pinned >= 0 {
		return nil
	}
	// Following links: OpenStore found every one on the way to be the
	// caller's or root's.
	fd, err := unix.Open(s.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open checkpoint directory %s: %w", s.Path, err)
	}
	s.pinned = fd
	s.Dir = "/proc/self/fd/" + strconv.Itoa(fd)
	return nil
}

// Lock takes an exclusive flock on Dir/.lock, held by a running supervisor
// for the life of the job so that two jobs never write one directory. The
// returned unlock releases it and may be called more than once.
func (s *Store) Lock() (unlock func(), err error) {
	path := filepath.Join(s.Dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, fileMode)
	if err != nil {
		return nil, fmt.Errorf("lock checkpoint directory: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		holder := readLockHolder(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("checkpoint directory %s is in use by another running job%s", s.Path, holder)
		}
		if errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("lock %s: the file system does not support flock (mount it with flock support or use another checkpoint directory): %w", path, err)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The holder's identity is only a hint for the error message above; a
	// failure to record it does not matter.
	host, _ := os.Hostname()
	if f.Truncate(0) == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("%d %s\n", os.Getpid(), host)), 0)
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}

// readLockHolder returns " (pid N on host H)" from the lock file, or "" when
// it cannot tell.
func readLockHolder(f *os.File) string {
	pid, host, ok := parseLockHolder(f)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" (pid %d on host %s)", pid, host)
}

// LockHolder returns the pid and host the last supervisor of dir recorded
// in its lock file. It does not tell whether that supervisor still runs.
func LockHolder(dir string) (pid int, host string, ok bool) {
	f, err := os.Open(filepath.Join(dir, LockName))
	if err != nil {
		return 0, "", false
	}
	defer f.Close()
	return parseLockHolder(f)
}

func parseLockHolder(f *os.File) (pid int, host string, ok bool) {
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	fields := strings.Fields(string(b[:n]))
	if len(fields) != 2 {
		return 0, "", false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		return 0, "", false
	}
	return pid, fields[1], true
}

// noGeneration is the error for a generation the directory does not have,
// naming those it has.
func (s *Store) noGeneration(gen int) error {
	gens, err := s.Generations()
	switch {
	case err != nil:
		return fmt.Errorf("generation %d does not exist in %s", gen, s.Dir)
	case len(gens) == 0:
		return fmt.Errorf("generation %d does not exist: %s holds no checkpoint", gen, s.Dir)
	}
	return fmt.Errorf("generation %d does not exist in %s, which holds generations %s", gen, s.Dir, JoinGenerations(gens, ", "))
}

// JoinGenerations renders generation numbers for a message, sep between
// them.
func JoinGenerations(gens []int, sep string) string {
	names := make([]string, len(gens))
	for i, g := range gens {
		names[i] = strconv.Itoa(g)
	}
	return strings.Join(names, sep)
}

// ParseGeneration reads a generation as a user names it: its number ("2")
// or its directory's name as ls shows it ("gen-000002", with or without a
// path or a trailing slash).
func ParseGeneration(arg string) (int, error) {
	name := filepath.Base(strings.TrimRight(arg, "/"))
	if n, ok := parseGen(name, genPrefix); ok {
		return n, nil
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && name == arg {
		return n, nil
	}
	return 0, fmt.Errorf("GENERATION must be a generation number (2) or directory name (%s), got %q: see `ckpt-apptainer list`", GenName(2), arg)
}

// parseGen returns the generation number of a name such as prefix+"000012",
// accepting only the canonical six-or-more digit spelling so that every
// generation has exactly one name.
func parseGen(name, prefix string) (int, bool) {
	digits, ok := strings.CutPrefix(name, prefix)
	if !ok || len(digits) < 6 {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n <= 0 || fmt.Sprintf("%06d", n) != digits {
		return 0, false
	}
	return n, true
}

// Generations returns the committed generations, ascending. A generation is
// committed once its directory has its final name; temporary and trashed
// directories are not listed.
func (s *Store) Generations() ([]int, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("list generations: %w", err)
	}
	var gens []int
	for _, e := range entries {
		if n, ok := parseGen(e.Name(), genPrefix); ok && e.IsDir() {
			gens = append(gens, n)
		}
	}
	sort.Ints(gens)
	return gens, nil
}

// Latest returns the generation the latest symlink points at. The error
// wraps fs.ErrNotExist when there is no latest symlink yet.
func (s *Store) Latest() (int, error) {
	target, err := os.Readlink(filepath.Join(s.Dir, LatestName))
	if err != nil {
		return 0, fmt.Errorf("read latest generation: %w", err)
	}
	n, ok := parseGen(target, genPrefix)
	if !ok {
		return 0, fmt.Errorf("read latest generation: %s points at %q, which is not a generation", LatestName, target)
	}
	return n, nil
}

// Open reads the manifest of committed generation gen. It refuses a
// manifest written by a newer format than this build understands.
func (s *Store) Open(gen int) (*Generation, error) {
	g := &Generation{Gen: gen, Dir: filepath.Join(s.Dir, GenName(gen))}
	if _, err := os.Lstat(g.Dir); errors.Is(err, fs.ErrNotExist) {
		return nil, s.noGeneration(gen)
	}
	m, err := g.readManifest()
	if err != nil {
		return nil, err
	}
	g.Manifest = m
	return g, nil
}

// NewestGood returns the newest committed generation that opens and
// verifies, preferring those no restart has marked as failed. Every newer
// one it has to skip is logged as a warning naming the generation it falls
// back to, so a user learns that the newest checkpoint was lost and what
// restarts instead.
func (s *Store) NewestGood(log logrus.FieldLogger) (*Generation, error) {
	if log == nil {
		log = logrus.StandardLogger()
	}
	gens, err := s.Generations()
	if err != nil {
		return nil, err
	}
	if len(gens) == 0 {
		return nil, fmt.Errorf("no checkpoint in %s", s.Path)
	}
	g, bad, err := s.newestGoodOf(gens)
	if err != nil {
		for _, e := range bad {
			log.Warnf("%v", unusable(e))
		}
		return nil, fmt.Errorf("no usable checkpoint in %s: all %d generations are damaged, the newest: %w", s.Path, len(gens), bad[0])
	}
	for _, e := range bad {
		if e.Error() != "" && !strings.HasPrefix(e.Error(), fmt.Sprintf("generation %d:", g.Gen)) {
			log.Warnf("%v; using generation %d", unusable(e), g.Gen)
		}
	}
	return g, nil
}

// unusable rewrites "generation N: reason" as "generation N is unusable: reason".
func unusable(err error) string {
	msg := err.Error()
	if head, rest, ok := strings.Cut(msg, ": "); ok && strings.HasPrefix(head, "generation ") {
		return head + " is unusable: " + rest
	}
	return "unusable generation: " + msg
}

// Prune removes the oldest committed generations so that keep remain
// (keep <= 0 keeps all). The generation latest points at is never removed,
// nor one whose data a remaining generation reads (an incremental one's
// parents): those stay until no remaining generation needs them.
// Each victim is first renamed to a .trash- name, so a crash mid-removal
// never leaves a half-deleted directory that looks like a generation.
func (s *Store) Prune(keep int) error {
	if keep <= 0 {
		return nil
	}
	gens, err := s.Generations()
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	// Generations on a history branch do not count against keep: the
	// job's own line keeps its newest keep, and a branch goes first.
	line := slices.DeleteFunc(slices.Clone(gens), func(gen int) bool { return s.OnBranch(gen) != "" })
	if len(gens) <= keep && len(line) == len(gens) {
		return nil
	}
	latest, err := s.Latest()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("prune: %w", err)
	}
	kept := s.keptWithParents(line, keep, latest)
	var trash []string
	for _, gen := range gens {
		if kept[gen] {
			continue
		}
		from := filepath.Join(s.Dir, GenName(gen))
		to := filepath.Join(s.Dir, trashPrefix+GenName(gen))
		// A trash directory of the same name is left over from a crash
		// during an earlier prune; rename cannot replace a non-empty one.
		if err := os.RemoveAll(to); err != nil {
			return fmt.Errorf("prune generation %d: %w", gen, err)
		}
		if err := os.Rename(from, to); err != nil {
			return fmt.Errorf("prune generation %d: %w", gen, err)
		}
		s.clearMarkers(gen)
		trash = append(trash, to)
	}
	if err := syncDir(s.Dir); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for _, t := range trash {
		if err := os.RemoveAll(t); err != nil {
			return fmt.Errorf("prune: remove %s: %w", t, err)
		}
		logrus.Debugf("pruned %s", t)
	}
	return nil
}

// keptWithParents returns the generations a Prune keeps: the newest keep,
// latest, and every generation whose data one of those reads. Only the
// data is kept for: such a generation may itself read from one that is
// gone, and then it is listed as unusable.
func (s *Store) keptWithParents(gens []int, keep, latest int) map[int]bool {
	kept := map[int]bool{}
	users := slices.Clone(gens[max(0, len(gens)-keep):])
	if latest > 0 {
		users = append(users, latest)
	}
	for _, gen := range users {
		kept[gen] = true
	}
	for parent, by := range s.needed(users) {
		if !kept[parent] {
			logrus.Debugf("keeping generation %d beyond the %d kept: generation %v reads data from it", parent, keep, by)
		}
		kept[parent] = true
	}
	return kept
}

// CleanStale removes what a crashed writer or pruner left behind: temporary
// generation directories, trashed generations and temporary latest links.
// Call it only while holding Lock, or it may remove a generation that
// another supervisor is writing.
func (s *Store) CleanStale() error {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return fmt.Errorf("clean stale checkpoint files: %w", err)
	}
	removed := false
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, tmpGenPrefix) && !strings.HasPrefix(name, trashPrefix) && !strings.HasPrefix(name, tmpLatestPrefix) &&
			!strings.HasPrefix(name, tmpFilePrefix) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.Dir, name)); err != nil {
			return fmt.Errorf("clean stale checkpoint files: %w", err)
		}
		logrus.Debugf("removed stale %s", filepath.Join(s.Dir, name))
		removed = true
	}
	if removed {
		if err := syncDir(s.Dir); err != nil {
			return fmt.Errorf("clean stale checkpoint files: %w", err)
		}
	}
	return nil
}

// List describes every committed generation, ascending. Without verify it
// checks only that the listed files exist with their recorded sizes; with
// verify it checks their checksums too.
func (s *Store) List(verify bool) ([]Info, error) {
	gens, err := s.Generations()
	if err != nil {
		return nil, err
	}
	latest, _ := s.Latest()
	infos := make([]Info, 0, len(gens))
	for _, gen := range gens {
		info := Info{Generation: gen, Latest: gen == latest}
		g, err := s.Open(gen)
		if err == nil {
			m := g.Manifest
			info.Time = m.Created
			info.Processes = len(m.Processes)
			info.Parent, info.Needs = m.Parent, m.Needs()
			for _, f := range m.Files {
				info.SizeBytes += f.Size
			}
			if fi, serr := os.Stat(g.Path(ManifestName)); serr == nil {
				info.SizeBytes += fi.Size()
			}
			if verify {
				err = g.Verify()
			} else {
				err = g.checkSizes()
			}
		}
		info.Valid = err == nil
		if err != nil {
			info.Error = err.Error()
		}
		info.RestoreFailed = s.Failed(gen)
		info.Branch = s.OnBranch(gen)
		infos = append(infos, info)
	}
	return infos, nil
}

// replaceLatest points latest at gen by renaming a fresh symlink over it,
// so a reader sees either the old target or the new one, never none.
func (s *Store) replaceLatest(gen int) error {
	tmp := filepath.Join(s.Dir, fmt.Sprintf("%s%d-%06d", tmpLatestPrefix, os.Getpid(), gen))
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("update %s: %w", LatestName, err)
	}
	if err := os.Symlink(GenName(gen), tmp); err != nil {
		return fmt.Errorf("update %s: %w", LatestName, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir, LatestName)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update %s: %w", LatestName, err)
	}
	if err := syncDir(s.Dir); err != nil {
		return fmt.Errorf("update %s: %w", LatestName, err)
	}
	return nil
}

// syncDir fsyncs a directory so that renames and creations in it survive a
// power loss. Some network and FUSE file systems reject fsync on a
// directory (EINVAL); they make metadata durable by other means, so that
// is not an error.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
