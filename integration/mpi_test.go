package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// mpiRanks is how many ranks each MPI job runs: more than this machine's
// cores, as jobs on a node often do.
const mpiRanks = 4

// mpiLaunchers are the MPI implementations the tests run: mpirun of Open
// MPI running mpiring.py (mpi4py), and MPICH's hydra running mpiring.c.
type mpiLauncher struct {
	name string
	// argv starts ranks ranks of the ring that logs to dir for steps.
	argv func(dir string, steps int) []string
}

var (
	mpiOnce   sync.Once
	mpiring   string // mpiring.c built with MPICH's mpicc
	mpiReason string
)

// buildMPI builds the MPICH program once; it says why MPI cannot be tested
// here when a package is missing.
func buildMPI(t *testing.T) {
	t.Helper()
	mpiOnce.Do(func() {
		for _, tool := range []string{"mpirun.openmpi", "mpicc.mpich", "mpiexec.mpich"} {
			if _, err := exec.LookPath(tool); err != nil {
				mpiReason = tool + " not found: install openmpi-bin, python3-mpi4py, mpich and libmpich-dev (scripts/install-deps.sh)"
				return
			}
		}
		if out, err := exec.Command(pythonPath, "-c", "import mpi4py").CombinedOutput(); err != nil {
			mpiReason = "python3-mpi4py is not installed: " + string(out)
			return
		}
		mpiring = filepath.Join(buildDir, "mpiring")
		if out, err := exec.Command("mpicc.mpich", "-O2", "-Wall", "-o", mpiring, "testdata/mpiring.c").CombinedOutput(); err != nil {
			mpiReason = "mpicc.mpich: " + err.Error() + "\n" + string(out)
		}
	})
	if mpiReason != "" {
		skipOrFail(t, "%s", mpiReason)
	}
}

func mpiLaunchers(p *programs) []mpiLauncher {
	script := filepath.Join(p.dir, "mpiring.py")
	return []mpiLauncher{
		{"openmpi", func(dir string, steps int) []string {
			// --oversubscribe: more ranks than cores.
			return []string{"mpirun.openmpi", "--oversubscribe", "-np", strconv.Itoa(mpiRanks), pythonPath, script, dir, strconv.Itoa(steps)}
		}},
		{"mpich", func(dir string, steps int) []string {
			return []string{"mpiexec.mpich", "-np", strconv.Itoa(mpiRanks), mpiring, dir, strconv.Itoa(steps)}
		}},
	}
}

// TestMPIInContainer runs MPICH's 4-rank ring inside an Apptainer
// container whose image holds MPICH and the program (apptainer exec img.sif
// mpiexec -np 4 /opt/mpiring) under --net private, checkpointed, killed,
// restarted, checkpointed with --kill and restarted, as root and
// unprivileged.
func TestMPIInContainer(t *testing.T) {
	e := setup(t)
	buildPrograms(t)
	buildMPI(t)
	sif := mpiSIF.get(t)
	const steps = 250
	for _, name := range []string{"user-v2", "root-v1"} {
		t.Run(name, func(t *testing.T) {
			fl := e.pickFlavor(t, name)
			machine.acquire(t, 2)
			j := newJob(t, e, fl)
			argv := apptainerArgv(fl, sif, "mpiexec", "-np", strconv.Itoa(mpiRanks), "/opt/mpiring", j.dir, strconv.Itoa(steps))
			s := j.launch([]string{"--net", "private"}, argv...)
			j.preemptTwice(s, 20, 20, steps)
		})
	}
}

// TestMPIJobs runs a 4-rank ring with an Allreduce per step under Open MPI
// and MPICH with --net private: mpirun and its ranks talk over TCP and unix
// sockets, through shared memory in /dev/shm, and Open MPI's ranks write
// to pseudo-terminals mpirun reads. Each is checkpointed, killed,
// restarted, checkpointed with --kill and restarted; the ranks check every
// token and sum, and the step log must count on without a gap.
func TestMPIJobs(t *testing.T) {
	e := setup(t)
	p := buildPrograms(t)
	buildMPI(t)
	src, err := os.ReadFile("testdata/mpiring.py")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "mpiring.py"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	const steps = 250
	for _, mpi := range mpiLaunchers(p) {
		t.Run(mpi.name, func(t *testing.T) {
			for _, name := range []string{"user-v2", "root-v1"} {
				t.Run(name, func(t *testing.T) {
					fl := e.pickFlavor(t, name)
					machine.acquire(t, 2)
					j := newJob(t, e, fl)
					// Open MPI refuses root without being told.
					j.extraEnv = append(j.extraEnv, "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
					s := j.launch([]string{"--net", "private"}, mpi.argv(j.dir, steps)...)
					j.preemptTwice(s, 20, 20, steps)
				})
			}
		})
	}
}
