package engine

import (
	"fmt"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/fds"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/image"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/memory"
	"github.com/ckpt-apptainer/ckpt-apptainer/engine/ptrace"
)

// jobDump holds what the dump of one process needs to know about the
// others: which open file descriptions, pipes and shared memory objects are
// already in the image.
type jobDump struct {
	opts CheckpointOptions
	// files dumps the processes' descriptors.
	files *fds.Dumper
	// shmem records, per shared memory object, the pages already dumped.
	shmem *memory.Shared
	// buffered is the page data held in memory so far, against
	// opts.BufferBytes.
	buffered int64
	// progress counts the page data for opts.Progress; nil without it.
	progress *progress
	// local saves the node-local files the job has.
	local *localSaver
}

func newJobDump(opts CheckpointOptions) *jobDump {
	return &jobDump{
		opts:     opts,
		files:    fds.NewDumper(fds.DumpOptions{Writer: opts.Writer, Stdio: opts.Stdio, Container: opts.App != nil}),
		shmem:    memory.NewShared(),
		progress: newProgress(opts.Progress),
		local:    newLocalSaver(opts.LocalLimit),
	}
}

// dumpAll dumps every process of the stopped job, parents first. On error
// the page files already started are closed and nothing is committed.
func (jd *jobDump) dumpAll(t *ptrace.Tracer, job *stoppedJob) ([]*processDump, error) {
	if err := checkSharedMM(job); err != nil {
		return nil, err
	}
	defer jd.files.Close()
	var dumps []*processDump
	fail := func(err error) ([]*processDump, error) {
		for _, d := range dumps {
			d.finish(jd.opts)
		}
		return nil, err
	}
	for _, sp := range job.procs {
		if sp.zombie {
			p, err := processIDs(sp.pid)
			if err != nil {
				return fail(err)
			}
			if p.State != image.ProcZombie {
				return fail(fmt.Errorf("pid %d: neither stopped nor a zombie", p.PID))
			}
			dumps = append(dumps, &processDump{proc: p})
			continue
		}
		d, err := jd.dumpProcess(t, sp)
		if err != nil {
			return fail(err)
		}
		if sp.pid == jd.opts.MainPID {
			jd.opts.Manifest.Job.MainPID = d.proc.PID
		}
		dumps = append(dumps, d)
	}
	var procs []*image.Process
	for _, d := range dumps {
		procs = append(procs, d.proc)
	}
	if err := jd.files.CheckPeers(procs); err != nil {
		return fail(err)
	}
	// A container's application may have an IPC namespace of its own
	// (Apptainer's --ipc, --containall): its objects are there.
	ipcPID := jd.opts.InitPID
	if jd.opts.App != nil {
		ipcPID = ipcHolder(jd.opts.InitPID, jd.opts.MainPID)
	}
	ipc, err := dumpSysVIPC(ipcPID, jd.opts.Writer)
	if err != nil {
		return fail(err)
	}
	jd.opts.Manifest.IPC = ipc
	return dumps, nil
}

// checkSharedMM refuses processes that share one address space without
// being threads of one process (vfork children before their exec,
// clone(CLONE_VM) without CLONE_THREAD): they cannot be re-created.
func checkSharedMM(job *stoppedJob) error {
	live := job.live()
	for i, a := range live {
		for _, b := range live[i+1:] {
			if sameVM(a.pid, b.pid) {
				return fmt.Errorf("host pids %d and %d share one address space (vfork before exec, or clone with CLONE_VM): not supported; checkpoint again in a moment", a.pid, b.pid)
			}
		}
	}
	return nil
}
