package cuda

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/ckpt-apptainer/ckpt-apptainer/engine/gpu"
)

// lockArgs is CUcheckpointLockArgs: the timeout, then reserved words the
// driver wants zero (64 bytes in all).
type lockArgs struct {
	TimeoutMs uint32
	_         uint32
	_         [7]uint64
}

// gpuPair is CUcheckpointGpuPair: two CUuuid.
type gpuPair struct {
	Old, New [16]byte
}

// restoreArgs is CUcheckpointRestoreArgs: the pairs and their count, then
// fields the driver wants zero (64 bytes in all).
type restoreArgs struct {
	Pairs *gpuPair
	Count uint32
	_     [52]byte
}

// Driver is libcuda.so.1's process checkpoint API, initialized.
type Driver struct {
	lock       func(pid int32, args *lockArgs) int32
	checkpoint func(pid int32, args unsafe.Pointer) int32
	restore    func(pid int32, args *restoreArgs) int32
	unlock     func(pid int32, args unsafe.Pointer) int32
	getState   func(pid int32, state *int32) int32
	version    func(v *int32) int32
	errorName  func(err int32, s **byte) int32
}

var _ gpu.Driver = (*Driver)(nil)

// Open loads libcuda.so.1 and initializes the driver API. A driver before
// the process checkpoint API (r550) is refused, naming the missing call.
func Open() (*Driver, error) {
	lib, err := purego.Dlopen("libcuda.so.1", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("load libcuda.so.1: %w (is the NVIDIA driver installed, and its library on the loader's path?)", err)
	}
	d := &Driver{}
	var cuInit func(flags uint32) int32
	for _, f := range []struct {
		name string
		fn   any
	}{
		{"cuInit", &cuInit},
		{"cuDriverGetVersion", &d.version},
		{"cuGetErrorName", &d.errorName},
		{"cuCheckpointProcessLock", &d.lock},
		{"cuCheckpointProcessCheckpoint", &d.checkpoint},
		{"cuCheckpointProcessRestore", &d.restore},
		{"cuCheckpointProcessUnlock", &d.unlock},
		{"cuCheckpointProcessGetState", &d.getState},
	} {
		if _, err := purego.Dlsym(lib, f.name); err != nil {
			return nil, fmt.Errorf("libcuda.so.1 has no %s: the driver predates its process checkpoint API (r550 and later have it)", f.name)
		}
		purego.RegisterLibFunc(f.fn, lib, f.name)
	}
	// The checkpoint calls need the caller's driver API initialized; the
	// caller needs no context of its own.
	if r := cuInit(0); r != 0 {
		return nil, fmt.Errorf("cuInit: %s", d.errString(r))
	}
	return d, nil
}

func (d *Driver) errString(r int32) string {
	var p *byte
	if d.errorName != nil && d.errorName(r, &p) == 0 && p != nil {
		return fmt.Sprintf("%s (%d)", goString(p), r)
	}
	return fmt.Sprintf("CUDA error %d", r)
}

func (d *Driver) call(name string, r int32) error {
	if r != 0 {
		return fmt.Errorf("%s: %s", name, d.errString(r))
	}
	return nil
}

// Lock implements gpu.Driver.
func (d *Driver) Lock(pid int, timeout time.Duration) error {
	args := lockArgs{TimeoutMs: uint32(timeout.Milliseconds())}
	return d.call("cuCheckpointProcessLock", d.lock(int32(pid), &args))
}

// Checkpoint implements gpu.Driver.
func (d *Driver) Checkpoint(pid int) error {
	return d.call("cuCheckpointProcessCheckpoint", d.checkpoint(int32(pid), nil))
}

// Restore implements gpu.Driver.
func (d *Driver) Restore(pid int, pairs []gpu.Pair) error {
	if len(pairs) == 0 {
		return d.call("cuCheckpointProcessRestore", d.restore(int32(pid), nil))
	}
	gp := make([]gpuPair, len(pairs))
	for i, p := range pairs {
		var err error
		if gp[i].Old, err = gpu.UUIDBytes(p.Old); err != nil {
			return err
		}
		if gp[i].New, err = gpu.UUIDBytes(p.New); err != nil {
			return err
		}
	}
	args := restoreArgs{Pairs: &gp[0], Count: uint32(len(gp))}
	err := d.call("cuCheckpointProcessRestore (onto other GPUs)", d.restore(int32(pid), &args))
	runtime.KeepAlive(gp)
	return err
}

// Unlock implements gpu.Driver.
func (d *Driver) Unlock(pid int) error {
	return d.call("cuCheckpointProcessUnlock", d.unlock(int32(pid), nil))
}

// State implements gpu.Driver.
func (d *Driver) State(pid int) (gpu.State, error) {
	var st int32
	if err := d.call("cuCheckpointProcessGetState", d.getState(int32(pid), &st)); err != nil {
		return 0, err
	}
	return gpu.State(st), nil
}

// Version implements gpu.Driver.
func (d *Driver) Version() (int, error) {
	var v int32
	if err := d.call("cuDriverGetVersion", d.version(&v)); err != nil {
		return 0, err
	}
	return int(v), nil
}

// goString copies a NUL-terminated C string.
func goString(p *byte) string {
	var b []byte
	for q := unsafe.Pointer(p); *(*byte)(q) != 0; q = unsafe.Add(q, 1) {
		b = append(b, *(*byte)(q))
	}
	return string(b)
}
