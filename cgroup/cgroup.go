package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/kernel"
)

// Version names the freezer a job cgroup uses; it is what the checkpoint
// image records in its cgroup section.
type Version string

const (
	// V1 is a directory of a cgroup v1 hierarchy with the freezer controller.
	V1 Version = "v1"
	// V2 is a cgroup v2 directory (cgroup.freeze).
	V2 Version = "v2"
	// None means the job has no cgroup and is stopped with ptrace alone.
	None Version = "none"
)

// EnvParent names the environment variable that points Create at a
// writable parent cgroup directory when Options.Parent is empty.
const EnvParent = "CKPT_APPTAINER_CGROUP_PARENT"

// ErrNoWritableCgroup is wrapped by Create when no cgroup directory the
// caller may create a child in was found; the caller then falls back to
// ptrace-only checkpoints.
var ErrNoWritableCgroup = errors.New("no writable cgroup")

// removeTimeout bounds how long Remove waits for killed tasks to leave.
const removeTimeout = 10 * time.Second

// v1Companions are the v1 controllers whose limits the job cgroup records
// and applies; each lives in its own hierarchy beside the freezer.
var v1Companions = []string{"memory", "pids", "cpu"}

// Options says where Create makes the job cgroup.
type Options struct {
	// Parent is an explicit parent cgroup directory (a v2 directory or a
	// v1 freezer directory); "" means find one.
	Parent string
	// Name is the job cgroup created under the parent, e.g. "ckpt-1234".
	Name string
}

// Cgroup is one job cgroup. Its methods are not safe for concurrent use.
type Cgroup struct {
	version Version
	path    string
	// mountPoint is where the hierarchy holding path is mounted.
	mountPoint string
	// companions maps a v1 controller (memory, pids, cpu) to the job's
	// directory in that controller's hierarchy; it may be path itself
	// when the controller is co-mounted with the freezer. Nil for v2.
	companions map[string]string
}

// Version returns the freezer the cgroup uses.
func (c *Cgroup) Version() Version { return c.version }

// Path returns the absolute directory of the cgroup (the v1 freezer
// directory for v1).
func (c *Cgroup) Path() string { return c.path }

// Detect tells a cgroup v2 directory from a cgroup v1 freezer directory by
// the filesystem magic of path. A v1 directory of a hierarchy without the
// freezer controller and any directory outside cgroupfs are errors.
func Detect(path string) (Version, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return None, fmt.Errorf("statfs %s: %w", path, err)
	}
	switch st.Type {
	case unix.CGROUP2_SUPER_MAGIC:
		return V2, nil
	case unix.CGROUP_SUPER_MAGIC:
		if hasFreezer(path) {
			return V1, nil
		}
		return None, fmt.Errorf("%s is in a cgroup v1 hierarchy without the freezer controller", path)
	default:
		return None, fmt.Errorf("%s is not a cgroup directory (filesystem magic %#x)", path, st.Type)
	}
}

// hasFreezer reports whether the v1 directory path belongs to the freezer
// hierarchy. Every non-root freezer cgroup has freezer.state; the root has
// none, so the mount table decides there.
func hasFreezer(path string) bool {
	if _, err := os.Stat(filepath.Join(path, "freezer.state")); err == nil {
		return true
	}
	ms, err := readMounts()
	if err != nil {
		return false
	}
	m, ok := mountOf(ms, path)
	return ok && m.fstype == "cgroup" && m.hasController("freezer")
}

// Create makes the job cgroup under a writable parent. With Parent == "" it
// tries $CKPT_APPTAINER_CGROUP_PARENT, then the caller's own cgroup v2
// directory when the caller may create a child in it and move tasks there.
// When nothing is writable the error wraps ErrNoWritableCgroup with the
// reasons.
func Create(opts Options) (*Cgroup, error) {
	if opts.Name == "" || opts.Name == "." || opts.Name == ".." || strings.Contains(opts.Name, "/") {
		return nil, fmt.Errorf("create job cgroup: invalid name %q", opts.Name)
	}
	ms, err := readMounts()
	if err != nil {
		return nil, fmt.Errorf("create job cgroup: %w", err)
	}
	if opts.Parent != "" {
		return createUnder(ms, opts.Parent, opts.Name)
	}
	var reasons []string
	if env := os.Getenv(EnvParent); env != "" {
		c, err := createUnder(ms, env, opts.Name)
		if err == nil {
			return c, nil
		}
		logrus.Warnf("cannot use $%s=%s: %v", EnvParent, env, err)
		reasons = append(reasons, fmt.Sprintf("$%s: %s", EnvParent, reason(err)))
	}
	c, err := createInOwn(ms, opts.Name)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, ErrNoWritableCgroup) {
		return nil, err
	}
	reasons = append(reasons, reason(err))
	return nil, fmt.Errorf("%w: %s", ErrNoWritableCgroup, strings.Join(reasons, "; "))
}

// reason returns the text of err without a leading ErrNoWritableCgroup,
// for joining several reasons under one.
func reason(err error) string {
	return strings.TrimPrefix(err.Error(), ErrNoWritableCgroup.Error()+": ")
}

// createInOwn creates the job cgroup as a child of the caller's own v2
// cgroup. Moving a task between two cgroups needs write access to
// cgroup.procs of their common ancestor, which is the caller's cgroup
// here, so that file must be writable too, not only the directory.
func createInOwn(ms []mount, name string) (*Cgroup, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("%w: own cgroup: %w", ErrNoWritableCgroup, err)
	}
	defer f.Close()
	own, err := ownCgroupDir(ms, f)
	if err != nil {
		return nil, fmt.Errorf("%w: own cgroup: %w", ErrNoWritableCgroup, err)
	}
	for _, p := range []string{own, filepath.Join(own, "cgroup.procs")} {
		mode := uint32(unix.W_OK)
		if p == own {
			mode |= unix.X_OK
		}
		if err := unix.Access(p, mode); err != nil {
			return nil, fmt.Errorf("%w: own cgroup %s is not delegated to uid %d (%s: %w)",
				ErrNoWritableCgroup, own, os.Getuid(), p, err)
		}
	}
	return createUnder(ms, own, name)
}

// createUnder makes name under parent and opens it.
func createUnder(ms []mount, parent, name string) (*Cgroup, error) {
	parent, err := filepath.Abs(parent)
	if err != nil {
		return nil, fmt.Errorf("create job cgroup under %s: %w", parent, err)
	}
	v, err := Detect(parent)
	if err != nil {
		return nil, fmt.Errorf("create job cgroup: %w", err)
	}
	if v == V1 && !kernel.Has(kernel.CgroupV1Freezer) {
		// A v1 job cgroup is there to freeze the job, nothing else.
		return nil, fmt.Errorf("%w: %s is a cgroup v1 freezer directory, and the v1 freezer is %s", ErrNoWritableCgroup,
			parent, kernel.Current().Why(kernel.CgroupV1Freezer))
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
			return nil, fmt.Errorf("%w: %w", ErrNoWritableCgroup, err)
		}
		return nil, fmt.Errorf("create job cgroup: %w", err)
	}
	c, err := open(ms, dir, v, true)
	if err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	logrus.Debugf("created %s job cgroup %s", v, dir)
	return c, nil
}

// Load opens an existing job cgroup, e.g. one a previous supervisor made.
func Load(path string) (*Cgroup, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	v, err := Detect(path)
	if err != nil {
		return nil, fmt.Errorf("load cgroup: %w", err)
	}
	ms, err := readMounts()
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", path, err)
	}
	return open(ms, path, v, false)
}

// open builds a Cgroup for the existing directory dir of version v. For v1
// it finds (and with create, makes) the job's directories in the memory,
// pids and cpu hierarchies at the same relative path as the freezer one.
func open(ms []mount, dir string, v Version, create bool) (*Cgroup, error) {
	m, ok := mountOf(ms, dir)
	if !ok {
		return nil, fmt.Errorf("open cgroup %s: no cgroup mount holds it", dir)
	}
	rel, err := filepath.Rel(m.point, dir)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	c := &Cgroup{version: v, path: dir, mountPoint: m.point}
	if v == V2 {
		return c, nil
	}
	c.companions = map[string]string{}
	for _, ctl := range v1Companions {
		if m.hasController(ctl) {
			c.companions[ctl] = dir
			continue
		}
		for _, cm := range ms {
			if cm.fstype != "cgroup" || !cm.hasController(ctl) {
				continue
			}
			cdir := filepath.Join(cm.point, rel)
			if create {
				if _, err := os.Stat(filepath.Dir(cdir)); err != nil {
					break
				}
				// Without a directory of its own the job simply shares
				// the caller's limits for this controller.
				if err := os.Mkdir(cdir, 0o755); err != nil {
					logrus.Debugf("no v1 %s cgroup for the job: %v", ctl, err)
					break
				}
			} else if _, err := os.Stat(cdir); err != nil {
				break
			}
			c.companions[ctl] = cdir
			break
		}
	}
	return c, nil
}

// dirs returns every directory of the job: the cgroup itself and, for v1,
// its companion directories in other hierarchies.
func (c *Cgroup) dirs() []string {
	ds := []string{c.path}
	for _, ctl := range v1Companions {
		if d, ok := c.companions[ctl]; ok && d != c.path {
			ds = append(ds, d)
		}
	}
	return ds
}

// AddProc moves the process pid (all its threads) into the cgroup.
func (c *Cgroup) AddProc(pid int) error {
	for _, d := range c.dirs() {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("move pid %d into %s: %w", pid, d, err)
		}
	}
	return nil
}

// Procs returns the host pids of the processes in the cgroup and its
// descendant cgroups, sorted.
func (c *Cgroup) Procs() ([]int, error) {
	seen := map[int]bool{}
	err := filepath.WalkDir(c.path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A child cgroup removed during the walk is not an error.
			if errors.Is(err, fs.ErrNotExist) && p != c.path {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != c.path {
				return nil
			}
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("parse %s/cgroup.procs: %w", p, err)
			}
			seen[pid] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", c.path, err)
	}
	pids := make([]int, 0, len(seen))
	for pid := range seen {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids, nil
}

// Remove kills the tasks left in the cgroup (cgroup.kill on v2, SIGKILL
// after a thaw on v1), waits for them to leave and removes the cgroup, its
// descendants and, for v1, its companion directories. A cgroup that is
// already gone is not an error.
func (c *Cgroup) Remove() error {
	if _, err := os.Stat(c.path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := c.killAll(); err != nil {
		return fmt.Errorf("remove %s: %w", c.path, err)
	}
	deadline := time.Now().Add(removeTimeout)
	for spin := 1; ; spin++ {
		pids, err := c.Procs()
		if err != nil {
			return fmt.Errorf("remove %s: %w", c.path, err)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove %s: tasks %v still present %v after SIGKILL", c.path, pids, removeTimeout)
		}
		if spin%20 == 0 {
			// Without cgroup.kill, a task forked while the others were
			// signalled escaped the first round.
			if err := c.killAll(); err != nil {
				return fmt.Errorf("remove %s: %w", c.path, err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, d := range c.dirs() {
		if err := removeTree(d); err != nil {
			return fmt.Errorf("remove %s: %w", c.path, err)
		}
	}
	logrus.Debugf("removed job cgroup %s", c.path)
	return nil
}

// killAll sends SIGKILL to every task of the cgroup tree: through
// cgroup.kill on v2 where the kernel has it (5.14), else task by task.
func (c *Cgroup) killAll() error {
	if c.version == V2 {
		// Opened without O_CREAT: cgroupfs refuses to create a missing
		// file with EACCES, which would hide that there is none.
		err := writeExisting(filepath.Join(c.path, "cgroup.kill"), "1")
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("kill tasks: %w", err)
		}
	} else if err := c.Thaw(); err != nil {
		// A task frozen by the v1 freezer acts on SIGKILL only once
		// thawed.
		return err
	}
	pids, err := c.Procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill pid %d: %w", pid, err)
		}
	}
	return nil
}

// removeTree removes dir and its child cgroups, deepest first; cgroupfs
// refuses rmdir of a directory that still has children.
func removeTree(dir string) error {
	var ds []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			ds = append(ds, p)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for i := len(ds) - 1; i >= 0; i-- {
		if err := unix.Rmdir(ds[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("rmdir %s: %w", ds[i], err)
		}
	}
	return nil
}

// Child creates (or opens) the sub-cgroup name below c, in the freezer's
// hierarchy only: a part of the job to freeze on its own while the rest
// runs (a container's application, whose FUSE image daemon must keep
// answering it while it is being frozen). Resource limits stay with the
// job's cgroup, which still holds the child.
func (c *Cgroup) Child(name string) (*Cgroup, error) {
	dir := filepath.Join(c.path, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	child := &Cgroup{version: c.version, path: dir, mountPoint: c.mountPoint, companions: map[string]string{}}
	if c.version == V2 {
		child.companions = nil
	}
	return child, nil
}

// writeExisting writes value to the existing file path.
func writeExisting(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
