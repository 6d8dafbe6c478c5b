package gpu

import (
	"fmt"
	"time"
)

// State is where a process stands with the driver's checkpoint API
// (CUprocessState).
type State int

const (
	Running      State = 0 // on the GPU
	Locked       State = 1 // no new GPU work starts
	Checkpointed State = 2 // device state in host memory, off the GPU
	Failed       State = 3 // the driver failed to checkpoint or restore it
)

func (s State) String() string {
	switch s {
	case Running:
		return "running"
	case Locked:
		return "locked"
	case Checkpointed:
		return "checkpointed"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("state %d", int(s))
}

// Driver is the driver's process checkpoint API, for processes named by
// their pid as the caller sees them.
type Driver interface {
	// Lock stops new GPU work in pid, waiting up to timeout for what runs
	// to finish.
	Lock(pid int, timeout time.Duration) error
	// Checkpoint moves a locked process's device state into its host
	// memory.
	Checkpoint(pid int) error
	// Restore puts a checkpointed process's device state back on the GPU;
	// it stays locked. pairs, when not nil, move it onto other GPUs; it
	// must then name every GPU the process was checkpointed on.
	Restore(pid int, pairs []Pair) error
	// Unlock lets a locked process run GPU work again.
	Unlock(pid int) error
	// State says where pid stands.
	State(pid int) (State, error)
	// Version is the CUDA driver API version (13000 for 13.0).
	Version() (int, error)
}
