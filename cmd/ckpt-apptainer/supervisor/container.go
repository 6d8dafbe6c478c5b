package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/ckpt-apptainer/ckpt-apptainer/cgroup"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces/apptainer"
)

// containerJob is what the supervisor knows of a job that runs Apptainer.
type containerJob struct {
	cmd *apptainer.Command
	// refused says why this Apptainer command cannot be checkpointed; the
	// job runs anyway and each checkpoint reports it.
	refused error
}

// parseContainer tells whether argv runs Apptainer: nil for a plain job.
func parseContainer(argv, env []string) *containerJob {
	cmd, err := apptainer.Parse(argv, env)
	if errors.Is(err, apptainer.ErrNotApptainer) {
		return nil
	}
	return &containerJob{cmd: cmd, refused: err}
}

// containerApp is the application of a running container job, found in the
// job's process tree.
type containerApp struct {
	scope   *engine.AppScope
	mainPID int // host pid of the application's main process
	inner   bool
}

// findContainerApp finds the application below the runtime's process
// (host pid runtime): the runtime's child in a mount namespace of its own
// (the container's) is the container process. With a PID namespace of its
// own that process is the namespace's init (Apptainer's), and the
// application is its child.
func findContainerApp(runtime int) (*containerApp, error) {
	rtNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", runtime))
	if err != nil {
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	rtPID, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", runtime))
	kids, err := proc.Children(runtime)
	if err != nil {
		return nil, fmt.Errorf("container runtime: %w", err)
	}
	var found []int
	var foundNS string
	for _, k := range kids {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", k))
		if err != nil || ns == rtNS {
			continue
		}
		found, foundNS = append(found, k), ns
	}
	switch {
	case len(found) == 0:
		return nil, errors.New("the container's application is not running (it has not started yet, or it has exited)")
	case len(found) > 1:
		return nil, fmt.Errorf("the container runtime has %d container processes, expected one", len(found))
	}
	c := found[0]
	if ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid_for_children", c)); ns == rtPID || ns == "" {
		if pns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c)); pns == rtPID {
			return &containerApp{scope: &engine.AppScope{Parent: runtime, MountNS: foundNS}, mainPID: c}, nil
		}
	}
	// c is the init of the container's PID namespace.
	apps, err := proc.Children(c)
	if err != nil {
		return nil, fmt.Errorf("container init: %w", err)
	}
	var live []int
	for _, a := range apps {
		if st, err := proc.ReadStat(a); err == nil && st.State != 'Z' {
			live = append(live, a)
		}
	}
	switch {
	case len(live) == 0:
		return nil, errors.New("the container's application is not running (it has not started yet, or it has exited)")
	case len(live) > 1:
		return nil, fmt.Errorf("the container's PID namespace init has %d children (processes orphaned inside the container): not supported", len(live))
	}
	if err := checkNoStrangers(c); err != nil {
		return nil, err
	}
	return &containerApp{scope: &engine.AppScope{Parent: c}, mainPID: live[0], inner: true}, nil
}

// appCgroup moves the container's application into a sub-cgroup of the
// job's and returns it. Freezing the whole job would freeze the image's
// FUSE daemon (squashfuse) too, and a process of the application waiting
// on a read from the image would then never freeze. Processes forked while
// they are moved are caught by the next pass.
func (s *supervisor) appCgroup(app *containerApp) (*cgroup.Cgroup, error) {
	if s.appCg == nil {
		cg, err := s.cg.Child("app")
		if err != nil {
			return nil, err
		}
		s.appCg = cg
	}
	moved := map[int]bool{}
	for pass := 0; pass < 20; pass++ {
		pids, err := app.scope.PIDs()
		if err != nil {
			return nil, err
		}
		fresh := 0
		for _, pid := range pids {
			if moved[pid] {
				continue
			}
			if err := s.appCg.AddProc(pid); err != nil && !errors.Is(err, unix.ESRCH) {
				return nil, fmt.Errorf("application cgroup: %w", err)
			}
			moved[pid] = true
			fresh++
		}
		if fresh == 0 {
			return s.appCg, nil
		}
	}
	return nil, errors.New("the container's application keeps starting processes faster than they can be moved into its cgroup")
}

// containerRecord records the container of the running application.
func (s *supervisor) containerRecord(app *containerApp, runtime int) (*image.Container, error) {
	rec, err := apptainer.NewRecord(s.container.cmd, s.job.Env, s.job.Cwd)
	if err != nil {
		return nil, err
	}
	ns, err := namespaces.Namespaces(app.mainPID)
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		// Types only: the paths name this run's processes.
		rec.Namespaces = append(rec.Namespaces, specs.LinuxNamespace{Type: n.Type})
	}
	if rec.Mounts, err = namespaces.Mounts(app.mainPID); err != nil {
		return nil, err
	}
	st, err := proc.ReadStatus(strconv.Itoa(runtime))
	if err != nil {
		return nil, err
	}
	if rec.RuntimePID, err = st.NSPid(); err != nil {
		return nil, err
	}
	rec.InnerPIDNamespace = app.inner
	return rec, nil
}

// containerStart prepares the restart of a container job: it checks the
// recorded container against what is here (image, binds), and returns
// how the engine is to start it again. imagePath is the image's new path
// (restart --image), "" for the recorded one.
func (s *supervisor) containerStart(rec *image.Container, imagePath string) (*engine.ContainerStart, error) {
	if err := apptainer.Verify(rec, imagePath); err != nil {
		return nil, err
	}
	command := "/proc/self/fd/" + strconv.Itoa(engine.ContainerStubFD)
	instance := rec.Subcommand == apptainer.InstanceStart
	if instance {
		// The stub is bound over the startscript, by path.
		command = filepath.Join(s.dir, instanceStubFile)
	}
	argv, err := apptainer.RestartArgv(rec, imagePath, []string{command})
	if err != nil {
		return nil, err
	}
	path, err := namespaces.LookPath(argv[0], rec.Env, rec.Dir)
	if err != nil {
		return nil, fmt.Errorf("container runtime %s: %w", argv[0], err)
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(rec.Dir, path)
	}
	cs := &engine.ContainerStart{Path: path, Argv: argv, Env: rec.Env, Dir: rec.Dir,
		RuntimePID: rec.RuntimePID, InnerPIDNamespace: rec.InnerPIDNamespace, Instance: instance}
	if instance {
		cs.StubFile, cs.KeepsContainer = command, apptainer.IsStarter
	}
	cs.Check = func(hostPID int) error {
		mounts, err := namespaces.Mounts(hostPID)
		if err != nil {
			return fmt.Errorf("the new container's mount table: %w", err)
		}
		recorded := rec.Mounts
		if instance {
			// The startscript is the restore's stub, bound over it.
			recorded, mounts = withoutMount(recorded, apptainer.StartscriptPath), withoutMount(mounts, apptainer.StartscriptPath)
		}
		if diffs := apptainer.CompareMounts(recorded, mounts); len(diffs) > 0 {
			return fmt.Errorf("the new container's mounts differ from the checkpoint's:\n  - %s\nrestart with the same binds and options as at launch (the recorded command line: %s)",
				strings.Join(diffs, "\n  - "), CommandLine(rec.Argv))
		}
		return nil
	}
	return cs, nil
}

// instanceStubFile is the file in the checkpoint directory that holds the
// restore stub an instance's restart binds over its startscript.
const instanceStubFile = "instance-stub"

// withoutMount returns mounts without those on dest.
func withoutMount(mounts []specs.Mount, dest string) []specs.Mount {
	var out []specs.Mount
	for _, m := range mounts {
		if m.Destination != dest {
			out = append(out, m)
		}
	}
	return out
}
