package gpu

import (
	"fmt"
	"time"
)

// fakeDriver stands in for the driver: it keeps each process's state as
// the driver would and fails the operations named in fail ("lock 2").
type fakeDriver struct {
	state map[int]State
	fail  map[string]bool
	ops   []string
	pairs []Pair // of the last Restore
}

func newFakeDriver(pids ...int) *fakeDriver {
	d := &fakeDriver{state: map[int]State{}, fail: map[string]bool{}}
	for _, p := range pids {
		d.state[p] = Running
	}
	return d
}

func (d *fakeDriver) step(op string, pid int, from, to State) error {
	name := fmt.Sprintf("%s %d", op, pid)
	d.ops = append(d.ops, name)
	if d.fail[name] {
		return fmt.Errorf("CUDA_ERROR_UNKNOWN (999)")
	}
	if st, ok := d.state[pid]; !ok || st != from {
		return fmt.Errorf("CUDA_ERROR_ILLEGAL_STATE (401): %s in state %v", op, st)
	}
	d.state[pid] = to
	return nil
}

func (d *fakeDriver) Lock(pid int, _ time.Duration) error {
	return d.step("lock", pid, Running, Locked)
}
func (d *fakeDriver) Checkpoint(pid int) error {
	return d.step("checkpoint", pid, Locked, Checkpointed)
}
func (d *fakeDriver) Restore(pid int, pairs []Pair) error {
	d.pairs = pairs
	return d.step("restore", pid, Checkpointed, Locked)
}
func (d *fakeDriver) Unlock(pid int) error { return d.step("unlock", pid, Locked, Running) }
func (d *fakeDriver) State(pid int) (State, error) {
	st, ok := d.state[pid]
	if !ok {
		return 0, fmt.Errorf("CUDA_ERROR_NOT_FOUND (500)")
	}
	return st, nil
}
func (d *fakeDriver) Version() (int, error) { return 13000, nil }
