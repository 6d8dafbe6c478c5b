// Command fakecuda stands in for ckpt-apptainer-cuda in the integration
// tests, on machines without a GPU: it speaks the helper's protocol
// (gpu.Serve) over a driver that keeps each process's checkpoint state in
// the JSON file $FAKECUDA_STATE, as the real driver keeps it across helper
// runs, appends every call to $FAKECUDA_LOG, and fails the operations
// named in the file $FAKECUDA_FAIL (lock, checkpoint, restore, unlock,
// one per line), read when it starts.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/gpu"
)

type fakeDriver struct {
	state map[int]gpu.State
	fail  map[string]bool
}

func (d *fakeDriver) load() {
	d.state = map[int]gpu.State{}
	if b, err := os.ReadFile(os.Getenv("FAKECUDA_STATE")); err == nil {
		json.Unmarshal(b, &d.state)
	}
}

func (d *fakeDriver) save() {
	b, _ := json.Marshal(d.state)
	os.WriteFile(os.Getenv("FAKECUDA_STATE"), b, 0o644)
}

// step moves pid from one of from to to, logging the call.
func (d *fakeDriver) step(op string, pid int, to gpu.State, from ...gpu.State) error {
	d.load()
	f, err := os.OpenFile(os.Getenv("FAKECUDA_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		fmt.Fprintf(f, "%s %d\n", op, pid)
		f.Close()
	}
	if d.fail[op] {
		return fmt.Errorf("CUDA_ERROR_UNKNOWN (999): %s failed (FAKECUDA_FAIL)", op)
	}
	st, known := d.state[pid]
	if !known {
		// A process the fake has not seen: a running one, or, for a
		// restore, one the engine restored, which the driver knows as
		// checkpointed.
		st = gpu.Running
		if op == "restore" {
			st = gpu.Checkpointed
		}
	}
	for _, f := range from {
		if st == f {
			d.state[pid] = to
			d.save()
			return nil
		}
	}
	return fmt.Errorf("CUDA_ERROR_ILLEGAL_STATE (401): %s of process %d in state %v", op, pid, st)
}

func (d *fakeDriver) Lock(pid int, _ time.Duration) error {
	return d.step("lock", pid, gpu.Locked, gpu.Running)
}
func (d *fakeDriver) Checkpoint(pid int) error {
	return d.step("checkpoint", pid, gpu.Checkpointed, gpu.Locked)
}
func (d *fakeDriver) Restore(pid int, _ []gpu.Pair) error {
	return d.step("restore", pid, gpu.Locked, gpu.Checkpointed)
}
func (d *fakeDriver) Unlock(pid int) error {
	return d.step("unlock", pid, gpu.Running, gpu.Locked)
}
func (d *fakeDriver) State(pid int) (gpu.State, error) {
	d.load()
	return d.state[pid], nil
}
func (d *fakeDriver) Version() (int, error) { return 13000, nil }

func main() {
	d := &fakeDriver{fail: map[string]bool{}}
	b, _ := os.ReadFile(os.Getenv("FAKECUDA_FAIL"))
	for _, op := range strings.Fields(string(b)) {
		d.fail[op] = true
	}
	if err := gpu.Serve(d, nil, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "fakecuda: %v\n", err)
		os.Exit(1)
	}
}
