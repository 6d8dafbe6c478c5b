package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hookScript is the hook the site and user files both name, with their own
// name as argument: it records event, name, generation and the error a
// postcheckpoint is told about, copies its stdin state to a file, and
// fails or hangs when a flag file asks it to.
const hookScript = `#!/bin/sh
d=$(dirname "$0")
echo "$CKPT_APPTAINER_EVENT $1 $CKPT_APPTAINER_GENERATION${CKPT_APPTAINER_ERROR:+ error}" >> "$d/order.log"
cat > "$d/state-$1-$CKPT_APPTAINER_EVENT.json"
[ -e "$d/fail-$1" ] && { echo "$1 was told to fail" >&2; exit 1; }
[ -e "$d/hang-$1" ] && sleep 60
exit 0
`

// hookState is the part of the stdin state the test checks.
type hookState struct {
	OCIVersion    string   `json:"ociVersion"`
	Status        string   `json:"status"`
	PID           int      `json:"pid"`
	Event         string   `json:"event"`
	CheckpointDir string   `json:"checkpointDir"`
	Generation    int      `json:"generation"`
	Argv          []string `json:"argv"`
}

// writeHooksFile writes a hooks file that runs hook.sh as name for every
// event, plus the extra precheckpoint entries given as JSON.
func (j *job) writeHooksFile(file, name string, timeout int, extraPre ...string) string {
	j.t.Helper()
	entry := fmt.Sprintf(`{"path": %q, "args": ["hook.sh", %q], "timeout": %d}`, j.path("hook.sh"), name, timeout)
	pre := strings.Join(append([]string{entry}, extraPre...), ", ")
	body := fmt.Sprintf(`{"hooks": {"precheckpoint": [%s], "postcheckpoint": [%s], "prerestore": [%s], "postrestore": [%s]}}`,
		pre, entry, entry, entry)
	path := j.path(file)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		j.t.Fatal(err)
	}
	return path
}

// flag creates or removes a flag file the hook script reads.
func (j *job) flag(name string, on bool) {
	j.t.Helper()
	var err error
	if on {
		err = os.WriteFile(j.path(name), nil, 0o644)
	} else {
		err = os.Remove(j.path(name))
	}
	if err != nil {
		j.t.Fatal(err)
	}
}

// hookOrder returns the hook records written since the mark-th line.
func (j *job) hookOrder(mark int) []string {
	b, _ := os.ReadFile(j.path("order.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if mark >= len(lines) {
		return nil
	}
	return lines[mark:]
}

func wantOrder(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%s: hooks ran as\n  %q\nwant\n  %q", what, got, want)
	}
}

// TestHooks runs a site hooks file ($CKPT_APPTAINER_HOOKS) and a user one
// (--hooks) around checkpoints and restarts of a plain job: their order,
// the state on their stdin, a failing and a hanging precheckpoint hook
// (the checkpoint is skipped, the job runs on, the previous generation
// stays), a failing prerestore hook (nothing starts), a hook run in the
// job's namespaces, and inspect's record of what ran.
func TestHooks(t *testing.T) {
	e := setup(t)
	for _, name := range []string{"user-v2", "root-v2"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			t.Parallel()
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			if err := os.WriteFile(j.path("hook.sh"), []byte(hookScript), 0o755); err != nil {
				t.Fatal(err)
			}
			inJob := fmt.Sprintf(`{"path": "/bin/sh", "args": ["sh", "-c", "readlink /proc/self/ns/pid > %s"], "container": true}`, j.path("hook-pidns"))
			site := j.writeHooksFile("site.json", "site", 30)
			user := j.writeHooksFile("user.json", "user", 1, inJob)
			j.chown(j.dir)
			j.extraEnv = append(j.extraEnv, "CKPT_APPTAINER_HOOKS="+site)
			const log = "job.log"
			argv := []string{j.env.progs.counter, j.path(log), strconv.Itoa(counterSteps)}

			s := counterJob(j, "--hooks", user)
			j.waitLines(s, log, 20)
			g1 := j.checkpoint().Generation
			g := strconv.Itoa(g1)
			wantOrder(t, "checkpoint", j.hookOrder(0),
				"precheckpoint site "+g, "precheckpoint user "+g, "postcheckpoint site "+g, "postcheckpoint user "+g)
			var st hookState
			if err := json.Unmarshal(j.readFile("state-user-precheckpoint.json"), &st); err != nil {
				t.Fatalf("the precheckpoint hook's stdin: %v", err)
			}
			if st.Event != "precheckpoint" || st.Generation != g1 || st.CheckpointDir != j.ckptDir || st.Status != "running" ||
				st.PID <= 0 || strings.Join(st.Argv, " ") != strings.Join(argv, " ") || st.OCIVersion == "" {
				t.Errorf("precheckpoint state %+v: want event, generation %d, directory %s, a pid, argv %q", st, g1, j.ckptDir, argv)
			}
			jobNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", st.PID))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(j.readFile("hook-pidns"))); got != jobNS {
				t.Errorf("the container hook ran in PID namespace %s, the job's is %s", got, jobNS)
			}

			// A failing site hook: the user's is not run, the checkpoint is
			// skipped, postcheckpoint hears why, and the job runs on.
			mark := len(j.hookOrder(0))
			j.flag("fail-site", true)
			code, _, stderr := j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
			if code == 0 || !strings.Contains(stderr, "precheckpoint hook") || !strings.Contains(stderr, "site was told to fail") {
				t.Errorf("checkpoint with a failing precheckpoint hook: exit %d, want a failure naming the hook and its output:\n%s", code, stderr)
			}
			g2 := strconv.Itoa(g1 + 1)
			wantOrder(t, "failing precheckpoint hook", j.hookOrder(mark),
				"precheckpoint site "+g2, "postcheckpoint site "+g2+" error", "postcheckpoint user "+g2+" error")
			j.flag("fail-site", false)
			if j.latest() != g1 {
				t.Errorf("a skipped checkpoint changed latest to %d", j.latest())
			}
			j.waitLines(s, log, j.lines(log)+10)

			// A hanging user hook is killed after its 1 s timeout.
			j.flag("hang-user", true)
			start := time.Now()
			code, _, stderr = j.cli("checkpoint", "--ckpt-dir", j.ckptDir)
			if took := time.Since(start); code == 0 || !strings.Contains(stderr, "timed out") || took > 20*time.Second {
				t.Errorf("checkpoint with a hanging hook: exit %d after %v, want a timeout after about 1 s:\n%s", code, took, stderr)
			}
			j.flag("hang-user", false)
			j.waitLines(s, log, j.lines(log)+10)
			last := j.checkpoint().Generation
			s.kill()

			// A failing prerestore hook: nothing starts, the generation is kept.
			j.flag("fail-user", true)
			code, _, stderr = j.cli(append([]string{"restart", "--ckpt-dir", j.ckptDir, "--hooks", user}, j.cgroupArgs()...)...)
			if code == 0 || !strings.Contains(stderr, "prerestore hook") {
				t.Errorf("restart with a failing prerestore hook: exit %d, want a refusal naming the hook:\n%s", code, stderr)
			}
			j.flag("fail-user", false)
			mark = len(j.hookOrder(0))
			s = j.restart("--hooks", user)
			j.waitLines(s, log, j.lines(log)+10)
			l := strconv.Itoa(last)
			wantOrder(t, "restart", j.hookOrder(mark),
				"prerestore site "+l, "prerestore user "+l, "postrestore site "+l, "postrestore user "+l)
			s.finish(0, 60*time.Second)
			if err := checkSequence(j.readFile(log), 1, counterSteps, parseCounterLine); err != nil {
				t.Fatalf("job log: %v", err)
			}

			// inspect lists what ran for the generation, failures included.
			_, out, _ := j.cli("inspect", "--ckpt-dir", j.ckptDir, "--json", l)
			var rep struct {
				Hooks []struct {
					Event    string `json:"event"`
					Source   string `json:"source"`
					ExitCode int    `json:"exit_code"`
				} `json:"hooks"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("inspect --json: %v\n%s", err, out)
			}
			var got []string
			for _, h := range rep.Hooks {
				src := "user"
				if h.Source == site {
					src = "site"
				}
				got = append(got, fmt.Sprintf("%s %s %d", h.Event, src, h.ExitCode))
			}
			wantOrder(t, "inspect", got, "precheckpoint site 0", "precheckpoint user 0", "precheckpoint user 0",
				"postcheckpoint site 0", "postcheckpoint user 0", "prerestore site 0", "prerestore user 1", "prerestore site 0", "prerestore user 0",
				"postrestore site 0", "postrestore user 0")
		})
	}
}

// hooksSIF carries a hooks file for its own application: its entries run
// in the container, with paths in the image.
var hooksSIF = &busyboxSIF{name: "hooks.sif", extra: map[string]string{
	".singularity.d/ckpt-apptainer/hooks.json": `{"hooks": {
		"postcheckpoint": [{"path": "/bin/sh", "args": ["sh", "-c", "echo image $CKPT_APPTAINER_EVENT $(cat /etc/ckpt-marker) >> /data/hooks.out"]}],
		"postrestore": [{"path": "/bin/sh", "args": ["sh", "-c", "echo image $CKPT_APPTAINER_EVENT $(cat /etc/ckpt-marker) >> /data/hooks.out"]}]}}`,
}}

// TestHooksInContainer: a user's hook that asks for the container runs in
// the container's namespaces and root (it reads a file only the image
// has), and the image's own hooks file is found and run there too, before
// and after a restart, with and without Apptainer's own PID namespace.
func TestHooksInContainer(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := hooksSIF.get(t)
	for _, c := range []struct {
		flavor string
		mode   containerMode
	}{{"user-v2", containerModes[0]}, {"user-v2", containerModes[2]}, {"root-v2", containerModes[2]}} {
		t.Run(c.flavor+"-"+c.mode.name, func(t *testing.T) {
			t.Parallel()
			fl := e.flavorNamed(t, c.flavor)
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			j.setupData(containerProgram{})
			user := j.path("user-hooks.json")
			body := `{"hooks": {"precheckpoint": [{"path": "/bin/sh", "container": true,
				"args": ["sh", "-c", "echo user $CKPT_APPTAINER_EVENT $(cat /etc/ckpt-marker) >> /data/hooks.out"]}]}}`
			if err := os.WriteFile(user, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			argv := containerArgv(fl, c.mode, j.path("data"), sif, "sh", "-c", busyboxCounter, "counter", "200", containerData+"/tick.log")
			s := j.launch([]string{"--hooks", user}, argv...)
			j.waitLines(s, "data/tick.log", 20)
			j.checkpoint()
			s.kill()
			s = j.restart("--hooks", user)
			s.finish(containerExit, containerFinishTimeout)
			got := strings.Split(strings.TrimSpace(string(j.readFile("data/hooks.out"))), "\n")
			wantOrder(t, "container hooks", got, "user precheckpoint inside-the-image",
				"image postcheckpoint inside-the-image", "image postrestore inside-the-image")
			if err := checkSequence(j.readFile("data/tick.log"), 1, 200, parseTickLine); err != nil {
				t.Errorf("ticks: %v", err)
			}
		})
	}
}
