package apptainer

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInstanceStateFile(t *testing.T) {
	host, err := os.Hostname()
	must(t, err)
	u, err := user.Current()
	must(t, err)
	tail := filepath.Join("instances", "app", host, u.Username, "web", "web.json")
	tests := []struct {
		name string
		env  []string
		want string
		err  string
	}{
		{name: "home", env: []string{"HOME=/h"}, want: filepath.Join("/h/.apptainer", tail)},
		{name: "config dir", env: []string{"HOME=/h", "APPTAINER_CONFIGDIR=/c"}, want: filepath.Join("/c", tail)},
		{name: "singularity config dir", env: []string{"HOME=/h", "SINGULARITY_CONFIGDIR=/s"}, want: filepath.Join("/s", tail)},
		{name: "apptainer's wins", env: []string{"SINGULARITY_CONFIGDIR=/s", "APPTAINER_CONFIGDIR=/c"}, want: filepath.Join("/c", tail)},
		{name: "path in the name", env: []string{"HOME=/h"}, err: "not a valid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "web"
			if tt.err != "" {
				name = "../web"
			}
			got, err := InstanceStateFile(tt.env, name)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %q, %v; want an error mentioning %q", got, err, tt.err)
				}
				return
			}
			must(t, err)
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// stateFile writes a state file the way Apptainer 1.4 does: pid and ppid
// in the job's PID namespace, and the namespace paths in the encoded
// config.
func stateFile(t *testing.T, dir string, pid, ppid int) string {
	t.Helper()
	cfg := `{"engineName":"apptainer","oci":{"linux":{"namespaces":[{"type":"pid","path":"/proc/37/ns/pid"},{"type":"user","path":"/proc/37/ns/user"},{"type":"ipc","path":"/proc/137/ns/ipc"}]}}}`
	doc := map[string]any{"pid": pid, "ppid": ppid, "name": "web", "user": "u", "image": "/i.sif",
		"config": base64.StdEncoding.EncodeToString([]byte(cfg)), "userns": true, "checkpoint": ""}
	b, err := json.Marshal(doc)
	must(t, err)
	path := filepath.Join(dir, "web.json")
	must(t, os.WriteFile(path, b, 0o644))
	return path
}

func TestInstanceStateRenumber(t *testing.T) {
	path := stateFile(t, t.TempDir(), 37, 36)
	st, err := ReadInstanceState(path)
	must(t, err)
	if st.PID != 37 || st.PPID != 36 {
		t.Fatalf("read pid %d ppid %d, want 37 36", st.PID, st.PPID)
	}
	must(t, st.Renumber(map[int]int{37: 14001, 36: 14000}))
	again, err := ReadInstanceState(path)
	must(t, err)
	if again.PID != 14001 || again.PPID != 14000 || st.PID != 14001 || st.PPID != 14000 {
		t.Errorf("after renumbering: file pid %d ppid %d, state pid %d ppid %d", again.PID, again.PPID, st.PID, st.PPID)
	}
	var enc string
	must(t, json.Unmarshal(again.raw["config"], &enc))
	cfg, err := base64.StdEncoding.DecodeString(enc)
	must(t, err)
	for _, want := range []string{`"/proc/14001/ns/pid"`, `"/proc/14001/ns/user"`, `"/proc/137/ns/ipc"`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %s: %s", want, cfg)
		}
	}
	for _, key := range []string{"name", "image", "userns", "checkpoint"} {
		if _, ok := again.raw[key]; !ok {
			t.Errorf("renumbering lost the field %q", key)
		}
	}
	if _, err := os.Stat(path + ".ckpt-tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
}

func TestClaimInstanceName(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.json")
	if err := ClaimInstanceName(missing, "web", 0); err != nil {
		t.Errorf("no state file: %v", err)
	}

	// A state file whose pid names no appinit is a killed job's: removed.
	stale := stateFile(t, dir, os.Getpid(), 1)
	if err := ClaimInstanceName(stale, "web", 0); err != nil {
		t.Fatalf("stale state file: %v", err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale state file not removed: %v", err)
	}

	// A live appinit: the name is taken.
	sleep, err := exec.LookPath("sleep")
	must(t, err)
	appinit := filepath.Join(dir, "appinit")
	b, err := os.ReadFile(sleep)
	must(t, err)
	must(t, os.WriteFile(appinit, b, 0o755))
	cmd := exec.Command(appinit, "30")
	must(t, cmd.Start())
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	live := stateFile(t, dir, cmd.Process.Pid, 1)
	err = ClaimInstanceName(live, "web", 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "already running") || !strings.Contains(err.Error(), "apptainer instance stop web") {
		t.Errorf("live instance: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live instance's state file was touched: %v", err)
	}

	// An appinit that goes within the grace time (a killed job's, its
	// namespace being torn down) leaves the name free.
	go func() {
		time.Sleep(300 * time.Millisecond)
		cmd.Process.Kill()
	}()
	if err := ClaimInstanceName(live, "web", 10*time.Second); err != nil {
		t.Errorf("an instance that ends within the grace time: %v", err)
	}
	if _, err := os.Stat(live); !os.IsNotExist(err) {
		t.Errorf("the ended instance's state file was not removed: %v", err)
	}
}
