package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestContainerOtherFreezers runs the container story under the cgroup v1
// freezer and with ptrace alone (no cgroup), plain and with Apptainer's PID
// namespace: the application's sub-cgroup is a v1 freezer directory there,
// or there is none.
func TestContainerOtherFreezers(t *testing.T) {
	e := setup(t)
	for _, flName := range []string{"user-v1", "user-none"} {
		t.Run(flName, func(t *testing.T) {
			fl := e.flavorNamed(t, flName)
			for _, mode := range containerModes[:2] {
				t.Run(mode.name, func(t *testing.T) {
					t.Parallel()
					sif := busyboxImage(t)
					machine.acquire(t, 1)
					containerCheckpointRestart(t, e, fl, mode, containerPrograms[0], sif)
				})
			}
		})
	}
}

// containerSignalled is a job that reports every SIGUSR2 it gets (a
// batch system's signal, which the supervisor passes on to Apptainer and
// Apptainer to the application) and ends on the third.
const containerSignalled = `exec 3>>"$1"
n=0
trap 'n=$((n + 1)); echo "usr2 $n" >&3; [ $n -ge 3 ] && exit 5' USR2
echo ready >&3
while :; do sleep 0.05; done`

// TestContainerSignalsAfterRestart: signals sent to the supervisor reach
// the application through Apptainer before and after a restart, and
// Apptainer's exit status is the application's.
func TestContainerSignalsAfterRestart(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := busyboxImage(t)
	for _, flName := range []string{"user-v2", "root-v2"} {
		t.Run(flName, func(t *testing.T) {
			fl := e.flavorNamed(t, flName)
			for _, mode := range containerModes[:2] {
				t.Run(mode.name, func(t *testing.T) {
					t.Parallel()
					machine.acquire(t, 1)
					j := newJob(t, e, fl)
					j.setupData(containerProgram{})
					argv := containerArgv(fl, mode, j.path("data"), sif, "sh", "-c", containerSignalled, "signalled", containerData+"/sig.log")
					s := j.launch(nil, argv...)
					j.waitLines(s, "data/sig.log", 1)
					s.signal(syscall.SIGUSR2)
					j.waitLines(s, "data/sig.log", 2)
					j.checkpoint("--kill")
					s.finish(143, killTimeout)

					s = j.restart()
					// A signal that comes before the job is back has no one
					// to go to.
					deadline := time.Now().Add(progressTimeout)
					for !s.outputContains("restored generation") {
						if s.exited() || time.Now().After(deadline) {
							t.Fatalf("restart did not come back (%s):\n%s", s.status(), s.output())
						}
						time.Sleep(20 * time.Millisecond)
					}
					// Apptainer's own processes of the new container may
					// still be starting when the application is back;
					// with --pid its init can drop a signal that comes
					// before it forwards any. One that went nowhere for
					// 5 s is sent again; the log shows any that arrived
					// twice.
					for try := 1; j.lines("data/sig.log") < 3; try++ {
						if try > 6 || s.exited() {
							t.Fatalf("no signal reached the restored job in %d tries (%s):\n%s", try-1, s.status(), s.output())
						}
						if try > 1 {
							t.Logf("signal %d after the restart went nowhere for 5 s; sending it again", try-1)
						}
						s.signal(syscall.SIGUSR2)
						for end := time.Now().Add(5 * time.Second); j.lines("data/sig.log") < 3 && time.Now().Before(end); {
							time.Sleep(20 * time.Millisecond)
						}
					}
					s.signal(syscall.SIGUSR2)
					s.finish(5, containerFinishTimeout)
					got := string(j.readFile("data/sig.log"))
					if want := "ready\nusr2 1\nusr2 2\nusr2 3\n"; got != want {
						t.Errorf("signal log:\n%s\nwant:\n%s", got, want)
					}
					if strings.Contains(s.output(), "level=error") {
						t.Errorf("restarted supervisor logged errors:\n%s", s.output())
					}
				})
			}
		})
	}
}

// containerEnvCounter counts like busyboxCounter and ends with a line
// showing what Apptainer set up: the variable --env passed and the working
// directory --pwd chose.
const containerEnvCounter = `exec 3>>"$2"
i=0
while [ $i -lt $1 ]; do
	i=$((i + 1))
	echo "tick $i" >&3
	sleep 0.05
done
echo "env ${CKPT_T:-unset} $(pwd)" >&3
exit 3`

// TestContainerOptions: --cleanenv, --env and --pwd keep working under the
// wrapper, and what they set up is still there after two restarts.
func TestContainerOptions(t *testing.T) {
	t.Parallel()
	e := setup(t)
	sif := busyboxImage(t)
	for _, flName := range []string{"user-v2", "root-v2"} {
		t.Run(flName, func(t *testing.T) {
			t.Parallel()
			fl := e.flavorNamed(t, flName)
			machine.acquire(t, 1)
			j := newJob(t, e, fl)
			j.setupData(containerProgram{})
			mode := containerMode{"options", []string{"--cleanenv", "--env", "CKPT_T=42", "--pwd", containerData}}
			argv := containerArgv(fl, mode, j.path("data"), sif, "sh", "-c", containerEnvCounter, "counter", "120", containerData+"/env.log")
			s := j.launch(nil, argv...)
			j.waitLines(s, "data/env.log", 20)
			j.checkpoint("--kill")
			s.finish(143, killTimeout)
			s = j.restart()
			j.waitLines(s, "data/env.log", 40)
			j.checkpoint("--kill")
			s.finish(143, killTimeout)
			s = j.restart()
			s.finish(containerExit, containerFinishTimeout)
			data := string(j.readFile("data/env.log"))
			lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
			if len(lines) != 121 {
				t.Fatalf("env.log has %d lines, want 121:\n%s", len(lines), data)
			}
			if err := checkSequence([]byte(strings.Join(lines[:120], "\n")+"\n"), 1, 120, parseTickLine); err != nil {
				t.Errorf("ticks: %v", err)
			}
			if want := "env 42 " + containerData; lines[120] != want {
				t.Errorf("last line %q, want %q", lines[120], want)
			}
		})
	}
}
