package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/gpu"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/proc"
)

// gpuPause is the GPU side of one checkpoint: the job's GPU processes
// with their device state moved into host memory, and the helper that
// moved it.
type gpuPause struct {
	helper *gpu.Helper
	susp   *gpu.Suspension
	record *image.GPU
}

// pauseGPU finds the job's GPU processes (those of scope in a container
// job) and moves their device state into host memory. It returns nil when
// the job uses no GPU. On error nothing is left paused.
func (s *supervisor) pauseGPU(scope *engine.AppScope) (*gpuPause, error) {
	pids, err := engine.JobPIDs(s.sb.InitPID(), scope)
	if err != nil {
		return nil, err
	}
	procs := gpu.Find(pids)
	if len(procs) == 0 {
		return nil, nil
	}
	n, err := gpu.ReadNode()
	if err != nil {
		return nil, fmt.Errorf("the job has GPU processes, but %w", err)
	}
	h, err := gpu.StartInstalledHelper()
	if err != nil {
		return nil, err
	}
	// A process found a moment ago may have exited since (a short-lived
	// child holding a CUDA parent's descriptors): it is left out, as Find
	// leaves out one gone before it looked.
	var host, inJob []int
	var found []gpu.Process
	for _, p := range procs {
		id, err := jobPID(p.PID)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			h.Close()
			return nil, err
		}
		host, inJob, found = append(host, p.PID), append(inJob, id), append(found, p)
	}
	procs = found
	if len(procs) == 0 {
		h.Close()
		return nil, nil
	}
	t0 := time.Now()
	susp, err := gpu.Suspend(h, host, s.opts.gpuLockTimeout())
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("%w (the job goes on on the GPU)", err)
	}
	for _, sk := range susp.Skipped {
		s.log.Infof("GPU: host pid %d has an NVIDIA device open but the driver does not know it as a CUDA process (%s): left to the dump", sk.PID, sk.Why)
	}
	var kept []gpu.Process
	var keptIDs []int
	for i, p := range procs {
		for _, tm := range susp.Timings {
			if tm.PID == p.PID {
				kept, keptIDs = append(kept, p), append(keptIDs, inJob[i])
			}
		}
	}
	if len(kept) == 0 {
		h.Close()
		return nil, nil
	}
	version, _ := h.Version()
	s.log.Infof("GPU: %d processes off the GPU in %v (driver %s)", len(kept), time.Since(t0).Round(time.Millisecond), n.Driver)
	return &gpuPause{helper: h, susp: susp, record: gpu.Record(n, version, kept, keptIDs, susp.Timings)}, nil
}

// keepDumped drops from the record the GPU processes that exited before the
// dump (a short-lived child holding a CUDA parent's descriptors): the
// image has only the processes the dump found. It runs before the
// manifest is written.
func (g *gpuPause) keepDumped(m *image.Manifest) {
	in := map[int]bool{}
	for _, p := range m.Processes {
		in[p.PID] = true
	}
	var kept []image.GPUProcess
	for _, p := range g.record.Processes {
		if in[p.PID] {
			kept = append(kept, p)
		}
	}
	g.record.Processes = kept
	if len(kept) == 0 {
		m.GPU = nil
	}
}

// resume puts the paused processes back on the GPU and ends the helper.
func (g *gpuPause) resume() error {
	err := g.susp.Resume()
	g.helper.Close()
	return err
}

// end ends the helper of a job that was ended after its checkpoint.
func (g *gpuPause) end() { g.helper.Close() }

// jobPID is host pid's pid in the job (in its innermost PID namespace), as
// the image records it.
func jobPID(host int) (int, error) {
	st, err := proc.ReadStatus(strconv.Itoa(host))
	if err != nil {
		return 0, err
	}
	return st.NSPid()
}

// gpuRestart is what a restart of a GPU job needs: the node checked and
// the helper started before anything of the job is.
type gpuRestart struct {
	helper *gpu.Helper
	record *image.GPU
	// pairs map the GPUs the job used onto those it was given here.
	pairs []gpu.Pair
}

// prepareGPU refuses a node that cannot put the image's GPU processes back
// on their GPUs, and starts the helper; nil for a job without a GPU.
func prepareGPU(rec *image.GPU) (*gpuRestart, error) {
	if rec == nil {
		return nil, nil
	}
	n, err := gpu.ReadNode()
	if err != nil && !errors.Is(err, gpu.ErrNoDriver) {
		return nil, err
	}
	pairs, err := gpu.Plan(rec, n, os.Getenv)
	if err != nil {
		return nil, err
	}
	h, err := gpu.StartInstalledHelper()
	if err != nil {
		return nil, err
	}
	return &gpuRestart{helper: h, record: rec, pairs: pairs}, nil
}

// resume puts the restored GPU processes (hostPIDs maps their pids in the
// job to their new host pids) back on the GPU.
func (g *gpuRestart) resume(hostPIDs map[int]int) error {
	defer g.helper.Close()
	var pids []int
	for _, p := range g.record.Processes {
		host, ok := hostPIDs[p.PID]
		if !ok {
			return fmt.Errorf("GPU process %d is not among the restored processes", p.PID)
		}
		pids = append(pids, host)
	}
	return gpu.Restored(g.helper, pids, g.pairs).Resume()
}

// gpuLockTimeout is --gpu-lock-timeout, or the default.
func (o Options) gpuLockTimeout() time.Duration {
	if o.GPULockTimeout > 0 {
		return o.GPULockTimeout
	}
	return gpu.DefaultLockTimeout
}
