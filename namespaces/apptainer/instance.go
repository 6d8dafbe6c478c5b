package apptainer

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// InstanceState is the part of an instance's state file that names its
// processes. Apptainer writes pid (the instance's init, appinit) and ppid
// (its daemon) as its own PID namespace sees them, and the namespace
// paths in the encoded config as /proc/PID/ns/TYPE.
type InstanceState struct {
	Path string
	PID  int
	PPID int
	raw  map[string]json.RawMessage
}

// InstanceStateFile returns where Apptainer keeps the state of instance
// name for the current user on this host, given the job's environment:
// CONFIGDIR/instances/app/HOST/USER/NAME/NAME.json, CONFIGDIR being
// $APPTAINER_CONFIGDIR or ~/.apptainer.
func InstanceStateFile(env []string, name string) (string, error) {
	if err := CheckInstanceName(name); err != nil {
		return "", err
	}
	dir, _ := lookupEnv(env, "APPTAINER_CONFIGDIR")
	if dir == "" {
		dir, _ = lookupEnv(env, "SINGULARITY_CONFIGDIR")
	}
	if dir == "" {
		home, _ := lookupEnv(env, "HOME")
		if home == "" {
			u, err := user.Current()
			if err != nil {
				return "", fmt.Errorf("instance %s: home directory: %w", name, err)
			}
			home = u.HomeDir
		}
		dir = filepath.Join(home, ".apptainer")
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", name, err)
	}
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("instance %s: user name: %w", name, err)
	}
	return filepath.Join(dir, "instances", "app", host, u.Username, name, name+".json"), nil
}

// CheckInstanceName refuses an instance name that cannot name a file.
func CheckInstanceName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("instance name %q is not a valid name", name)
	}
	return nil
}

// ReadInstanceState reads an instance's state file; a missing file is
// reported as fs.ErrNotExist.
func ReadInstanceState(path string) (*InstanceState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := &InstanceState{Path: path}
	if err := json.Unmarshal(b, &st.raw); err != nil {
		return nil, fmt.Errorf("instance state %s: %w", path, err)
	}
	for key, dst := range map[string]*int{"pid": &st.PID, "ppid": &st.PPID} {
		if v, ok := st.raw[key]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return nil, fmt.Errorf("instance state %s: %s: %w", path, key, err)
			}
		}
	}
	return st, nil
}

// Renumber rewrites the state's pids through pids (old to new), in its
// pid and ppid fields and in the namespace paths of its config, and
// writes the file in place of the old one. The job's sandbox gives the
// instance pids that mean other processes outside it; rewritten to the
// host's, `apptainer instance list` and `instance stop` on the host find
// the instance.
func (st *InstanceState) Renumber(pids map[int]int) error {
	for _, key := range []string{"pid", "ppid"} {
		var v int
		if raw, ok := st.raw[key]; !ok || json.Unmarshal(raw, &v) != nil {
			continue
		}
		if n, ok := pids[v]; ok {
			st.raw[key] = json.RawMessage(strconv.Itoa(n))
		}
	}
	if raw, ok := st.raw["config"]; ok {
		var enc string
		if err := json.Unmarshal(raw, &enc); err != nil {
			return fmt.Errorf("instance state %s: config: %w", st.Path, err)
		}
		cfg, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return fmt.Errorf("instance state %s: config: %w", st.Path, err)
		}
		s := string(cfg)
		for from, to := range pids {
			s = strings.ReplaceAll(s, fmt.Sprintf(`"/proc/%d/`, from), fmt.Sprintf(`"/proc/%d/`, to))
		}
		st.raw["config"], _ = json.Marshal(base64.StdEncoding.EncodeToString([]byte(s)))
	}
	b, err := json.Marshal(st.raw)
	if err != nil {
		return err
	}
	tmp := st.Path + ".ckpt-tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("instance state: %w", err)
	}
	if err := os.Rename(tmp, st.Path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("instance state: %w", err)
	}
	if n, ok := pids[st.PID]; ok {
		st.PID = n
	}
	if n, ok := pids[st.PPID]; ok {
		st.PPID = n
	}
	return nil
}

// isAppinit reports whether process pid runs Apptainer's container init
// (and has not exited).
func isAppinit(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.Comm == "appinit" && st.State != 'Z'
}

// IsStarter reports whether process pid runs Apptainer's starter (the
// runtime's process that sets up and watches a container).
func IsStarter(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	base := filepath.Base(exe)
	return base == "starter" || base == "starter-suid"
}

// ClaimInstanceName checks that no instance called like the job's runs
// on this host (its state file names a live appinit), and removes the
// state file a killed job left behind, whose pids name nothing of it now.
// An appinit still alive is given up to grace to go: the kernel tears a
// killed job's PID namespace down while its successor already starts.
func ClaimInstanceName(path, name string, grace time.Duration) error {
	st, err := ReadInstanceState(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(grace)
	for isAppinit(st.PID) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if isAppinit(st.PID) {
		return fmt.Errorf("an instance named %s is already running (pid %d, state file %s); stop it with `apptainer instance stop %s`, or use another name", name, st.PID, path, name)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the stale state file of instance %s: %w", name, err)
	}
	return nil
}
