package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
	"github.com/ckpt-apptainer/ckpt-apptainer/namespaces/apptainer"
)

// isInstance tells whether the job starts an Apptainer instance.
func (c *containerJob) isInstance() bool {
	return c != nil && c.cmd != nil && c.cmd.Subcommand == apptainer.InstanceStart
}

// containerRuntime returns the host pid of the job's container runtime:
// the job's main process, or for an instance the instance's daemon, which
// `apptainer instance start` leaves running when it returns. From then on
// the daemon stands for the job's main process.
func (s *supervisor) containerRuntime() (int, error) {
	if !s.container.isInstance() {
		return s.jobPID, nil
	}
	initPID := s.sb.InitPID()
	kids, err := proc.Children(initPID)
	if err != nil {
		return 0, fmt.Errorf("job processes: %w", err)
	}
	var daemons []int
	for _, k := range kids {
		if k == s.jobPID && !isInstanceDaemon(k) {
			if st, err := proc.ReadStat(k); err == nil && st.State != 'Z' {
				return 0, fmt.Errorf("instance %s is still starting (`%s` has not returned yet); try again in a moment", s.container.cmd.Instance, CommandLine(s.job.Argv))
			}
			continue
		}
		if isInstanceDaemon(k) {
			daemons = append(daemons, k)
		}
	}
	switch len(daemons) {
	case 0:
		return 0, fmt.Errorf("instance %s: its daemon is not running", s.container.cmd.Instance)
	case 1:
		s.jobPID = daemons[0]
		return daemons[0], nil
	default:
		return 0, fmt.Errorf("instance %s: the job runs %d instance daemons, expected one", s.container.cmd.Instance, len(daemons))
	}
}

// isInstanceDaemon reports whether pid is the daemon of an Apptainer
// instance: the starter, under the name it gives itself.
func isInstanceDaemon(pid int) bool {
	if !apptainer.IsStarter(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "instance:")
}

// checkNoStrangers refuses a container whose PID namespace (that of init,
// the container's init) holds processes that do not descend from init:
// those `apptainer exec instance://` put there from outside. They live
// outside the job and its cgroup, and a restart could not bring them back.
func checkNoStrangers(init int) error {
	pidNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", init))
	if err != nil {
		return fmt.Errorf("container init: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var strangers []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == init {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || ns != pidNS {
			continue
		}
		st, err := proc.ReadStat(pid)
		if err != nil || descendsFrom(st, init) {
			continue
		}
		desc := fmt.Sprintf("%d (%s", pid, st.Comm)
		if parent, err := proc.ReadStat(st.PPID); err == nil {
			desc += fmt.Sprintf(", child of %d %s", st.PPID, parent.Comm)
		}
		strangers = append(strangers, desc+")")
	}
	if len(strangers) > 0 {
		return fmt.Errorf("processes %s run in the container without being part of the job (started by `apptainer exec instance://`?): they cannot be checkpointed; let them finish first, or start that work from the instance's startscript",
			strings.Join(strangers, ", "))
	}
	return nil
}

// descendsFrom reports whether ancestor is among the ancestors of the
// process st describes. A process that is gone, or a zombie about to be
// reaped, counts as one of the family: it has nothing left to checkpoint.
func descendsFrom(st *proc.Stat, ancestor int) bool {
	for depth := 0; depth < 1024; depth++ {
		if st.State == 'Z' {
			return true
		}
		switch st.PPID {
		case ancestor:
			return true
		case 0, 1:
			return false
		}
		var err error
		if st, err = proc.ReadStat(st.PPID); err != nil {
			return true
		}
	}
	return false
}

// instanceGoneGrace is how long a restart waits for the instance of a
// job killed just before to be gone.
const instanceGoneGrace = 10 * time.Second

// claimInstance readies the start of the job's instance: no instance of
// that name may run already, a state file a killed job left is removed,
// and the name is registered with the checkpoint directory, for
// `checkpoint --instance` and `restart --instance`. It returns the
// instance's state file.
func (s *supervisor) claimInstance() (string, error) {
	name := s.container.cmd.Instance
	path, err := apptainer.InstanceStateFile(s.job.Env, name)
	if err != nil {
		return "", err
	}
	if err := apptainer.ClaimInstanceName(path, name, instanceGoneGrace); err != nil {
		return "", err
	}
	if err := registerInstance(name, s.dir); err != nil {
		return "", err
	}
	return path, nil
}

// publishInstance renumbers the instance's state file with host pids once
// the instance runs, so that `apptainer instance list` and `instance stop`
// outside the job find it.
func (s *supervisor) publishInstance(path string) {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		done, err := s.renumberInstance(path)
		if err != nil {
			s.log.Warnf("instance %s: %v; `apptainer instance` commands outside the job will not find it", s.container.cmd.Instance, err)
			return
		}
		if done {
			return
		}
	}
	s.log.Warnf("instance %s: its state file %s did not appear; `apptainer instance` commands outside the job will not find it", s.container.cmd.Instance, path)
}

// renumberInstance rewrites the state file once the instance has started:
// done reports whether it has.
func (s *supervisor) renumberInstance(path string) (done bool, err error) {
	s.mu.Lock()
	daemon, err := s.containerRuntime()
	s.mu.Unlock()
	if err != nil {
		return false, nil // still starting, or gone: the deadline ends it
	}
	kids, err := proc.Children(daemon)
	if err != nil {
		return false, nil
	}
	daemonNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", daemon))
	appinit := 0
	for _, k := range kids {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", k)); err == nil && ns != daemonNS {
			appinit = k
		}
	}
	if appinit == 0 {
		return false, nil
	}
	st, err := apptainer.ReadInstanceState(path)
	if err != nil {
		return false, nil
	}
	pids := map[int]int{}
	for _, host := range []int{appinit, daemon} {
		inJob, err := sandboxPID(host)
		if err != nil {
			return false, err
		}
		pids[inJob] = host
	}
	if st.PID == appinit {
		return true, nil
	}
	if _, ok := pids[st.PID]; !ok {
		return false, nil // an older state file: the new one comes
	}
	if err := st.Renumber(pids); err != nil {
		return false, err
	}
	s.log.Debugf("instance %s: state file %s names host pids %d (appinit) and %d (daemon)", s.container.cmd.Instance, path, appinit, daemon)
	return true, nil
}

// sandboxPID returns the pid host has in the job's sandbox: the second of
// its NSpid list.
func sandboxPID(host int) (int, error) {
	st, err := proc.ReadStatus(strconv.Itoa(host))
	if err != nil {
		return 0, err
	}
	ns, err := st.Ints("NSpid")
	if err != nil || len(ns) < 2 {
		return 0, fmt.Errorf("pid %d: no pid in the job's namespace (NSpid %v)", host, ns)
	}
	return ns[1], nil
}

// instanceEntry is what the registry keeps of an instance launched under
// ckpt-apptainer.
type instanceEntry struct {
	Name    string `json:"name"`
	CkptDir string `json:"ckpt_dir"`
}

// registryPath is where instance name is registered:
// ~/.ckpt-apptainer/instances/HOST/NAME.json. The host is part of the
// path because home directories are shared between a cluster's nodes.
func registryPath(name string) (string, error) {
	if err := apptainer.CheckInstanceName(name); err != nil {
		return "", err
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("instance registry: %w", err)
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("instance registry: %w", err)
	}
	return filepath.Join(home, ".ckpt-apptainer", "instances", host, name+".json"), nil
}

func registerInstance(name, dir string) error {
	path, err := registryPath(name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("instance registry: %w", err)
	}
	b, _ := json.Marshal(instanceEntry{Name: name, CkptDir: dir})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("instance registry: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("instance registry: %w", err)
	}
	return nil
}

// instanceCkptDir returns the checkpoint directory of instance name.
func instanceCkptDir(name string) (string, error) {
	path, err := registryPath(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no instance %s was started with `ckpt-apptainer launch -- apptainer instance start` on this host (%s does not exist); give its checkpoint directory with --ckpt-dir", name, path)
	}
	if err != nil {
		return "", fmt.Errorf("instance registry: %w", err)
	}
	var e instanceEntry
	if err := json.Unmarshal(b, &e); err != nil || e.CkptDir == "" {
		return "", fmt.Errorf("instance registry %s: unreadable entry (%v); give the checkpoint directory with --ckpt-dir", path, err)
	}
	return e.CkptDir, nil
}
